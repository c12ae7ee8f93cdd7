"""Does kerasvit run right on a GPU? Trains, times and explains its models on CUDA with the
torch and JAX backends, then reloads what the GPU saved on the CPU and compares.

Made for a CUDA machine with torch and/or JAX but no TensorFlow, so no data pipeline: the
data is a CIFAR-10 sample saved as .npz on a machine that has TensorFlow. It needs keras and
keras-hub, and grain (keras-hub feeds numpy arrays to `fit` through grain or TensorFlow).

    python -m bench.gpu_check --make-sample cifar_sample.npz            # with TensorFlow
    python -m bench.gpu_check --sample cifar_sample.npz --out gpu_check  # on the GPU machine

Writes gpu_check/gpu_check.json and gpu_check.md (measured: results/gpu/). Each check is one
worker process per backend (Keras fixes its backend at import); a failing check is recorded
as one error line and the rest still runs.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from bench.worker import error_line

BACKENDS = ("torch", "jax")
SCRATCH_MODELS = ("cnn", "vit")
EXPLAINED_IMAGES = 8
VIT_B16_IMAGES = 512
VIT_B16_BATCH = 64
# ViT-B/16's architecture (keras-hub's vit_base_patch16_224 presets), random weights.
VIT_B16_ARCH = dict(image_shape=(224, 224, 3), patch_size=16, num_layers=12, num_heads=12,
                    hidden_dim=768, mlp_dim=3072)


def make_sample(path):
    """5,000 training images (500 per class) and the first 2,000 test images, uint8."""
    from kerasvit.data import cifar

    splits = cifar.load_splits(validation_size=5000, subset_per_class=500)
    np.savez_compressed(path, train_images=splits["train"][0], train_labels=splits["train"][1],
                        test_images=splits["test"][0][:2000], test_labels=splits["test"][1][:2000])


# ---- inside a worker (KERAS_BACKEND is set) ----

def time_steps(model, images, labels, batch_size, epochs):
    """model.fit with the device synced at each step end; returns (history, step intervals)."""
    from bench.keras_side import StepTimer

    timer = StepTimer()
    history = model.fit(images, labels, batch_size=batch_size, epochs=epochs, verbose=0,
                        shuffle=True, callbacks=[timer])
    return history, timer.times


def eval_images_per_s(model, images, batch_size, repeats=10):
    from kerasvit.evaluation import timing

    seconds, _ = timing.median_call_seconds(model, images[:batch_size], repeats)
    return batch_size / seconds


def train_check(model, config, sample, backend, epochs):
    """Trains on the sample; loss before/after, test accuracy and throughput."""
    import keras

    from kerasvit.training import recipe

    images, labels = sample["train_images"].astype("float32"), sample["train_labels"]
    one_hot = keras.utils.to_categorical(labels, 10)
    test_images = sample["test_images"].astype("float32")
    test_one_hot = keras.utils.to_categorical(sample["test_labels"], 10)
    steps = len(images) // config.batch_size
    config.epochs = epochs
    recipe.compile_model(model, config, steps, backend)
    before = model.evaluate(images, one_hot, batch_size=config.batch_size, verbose=0, return_dict=True)
    history, intervals = time_steps(model, images, one_hot, config.batch_size, epochs)
    test = model.evaluate(test_images, test_one_hot, batch_size=config.batch_size, verbose=0,
                          return_dict=True)
    steady = intervals[min(3, len(intervals) // 2):]
    return {
        "epochs": epochs, "batch_size": config.batch_size, "train_images": len(images),
        "loss_before": before["loss"], "train_loss_per_epoch": history.history["loss"],
        "test_loss": test["loss"], "test_accuracy": test["accuracy"],
        "first_step_s": intervals[0], "train_images_per_s": config.batch_size / float(np.median(steady)),
        "eval_images_per_s": eval_images_per_s(model, test_images, config.batch_size),
    }


def explain_outputs(model, model_name, images):
    from kerasvit.explain.explanations import explain_batch

    result = explain_batch(model, model_name, images)
    maps = result["gradcam"] if result["method"] == "gradcam" else result["rollout"]
    return {"probabilities": result["probabilities"], "map": np.asarray(maps, dtype="float32")}


def scratch_model_checks(backend, sample, out, epochs, bf16_epochs):
    import keras

    from kerasvit import config as config_module
    from kerasvit.models import build_model
    from kerasvit.training import precision

    results = {}
    for model_name in SCRATCH_MODELS:
        for compute in ("fp32", "bf16"):
            name = f"{model_name}-{compute}"
            try:
                config = config_module.resolve(None, model_name, {}, [])
                config.mixed_precision = "on" if compute == "bf16" else "off"
                precision.set_precision(config.mixed_precision)
                keras.utils.set_random_seed(0)
                model = build_model(model_name, **config.model_args)
                results[name] = train_check(model, config, sample, backend,
                                            epochs if compute == "fp32" else bf16_epochs)
                if compute == "fp32":
                    images = sample["test_images"][:EXPLAINED_IMAGES].astype("float32")
                    np.savez(out / f"{backend}-{model_name}-gpu.npz",
                             **explain_outputs(model, model_name, images))
                    model.save(out / f"{backend}-{model_name}.keras")
            except Exception as error:  # Recorded; the other checks still run.
                traceback.print_exc()
                results[name] = {"error": error_line(error)}
            finally:
                precision.set_precision("off")
    return results


def make_vit_b16_preset(path):
    """A full-size ViT-B/16 with random weights, saved as keras-hub saves a downloaded preset."""
    import keras_hub

    backbone = keras_hub.models.ViTBackbone(**VIT_B16_ARCH)
    converter = keras_hub.layers.ViTImageConverter(image_size=VIT_B16_ARCH["image_shape"][:2],
                                                   scale=1 / 127.5, offset=-1.0)
    preprocessor = keras_hub.models.ViTImageClassifierPreprocessor(image_converter=converter)
    keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=1000,
                                        preprocessor=preprocessor).save_to_preset(str(path))


def vit_b16_sample(sample, count=VIT_B16_IMAGES):
    """The first `count` images as they are (32x32, float32 in [0, 255]): kerasvit's vit_b16
    is one graph from raw pixels, its resize to 224 and normalisation inside the compiled
    step (kerasvit.models.preset_graph), as kerasvit.train now feeds it."""
    return {"train_images": sample["train_images"][:count].astype("float32"),
            "train_labels": sample["train_labels"][:count],
            "test_images": sample["test_images"][:count].astype("float32"),
            "test_labels": sample["test_labels"][:count]}


def vit_b16_checks(backend, sample, out):
    """kerasvit's vit_b16 builder on a local full-size preset: full fine-tune throughput."""
    import keras

    from kerasvit import config as config_module
    from kerasvit.models.vit_b16 import build_vit_b16
    from kerasvit.training import precision

    preset = out / "vit_b16_random_preset"
    if not preset.exists():
        make_vit_b16_preset(preset)
    results = {}
    for compute in ("fp32", "bf16"):
        try:
            config = config_module.resolve(None, "vit_b16", {"batch_size": VIT_B16_BATCH}, [])
            config.mixed_precision = "on" if compute == "bf16" else "off"
            precision.set_precision(config.mixed_precision)
            keras.utils.set_random_seed(0)
            model = build_vit_b16(preset=str(preset), finetune="full")
            data = vit_b16_sample(sample)
            results[f"vit_b16-{compute}"] = train_check(model, config, data, backend, epochs=2)
        except Exception as error:
            traceback.print_exc()
            results[f"vit_b16-{compute}"] = {"error": error_line(error)}
        finally:
            precision.set_precision("off")
    return results


def reload_on_cpu(out, sample):
    """Loads every .keras the GPU workers saved and explains the same images here (CPU)."""
    import keras

    images = sample["test_images"][:EXPLAINED_IMAGES].astype("float32")
    backend = keras.backend.backend()
    results = {}
    for saved in sorted(out.glob("*.keras")):
        origin, model_name = saved.stem.split("-", 1)
        try:
            model = keras.saving.load_model(saved)
            np.savez(out / f"{origin}-{model_name}-cpu-{backend}.npz",
                     **explain_outputs(model, model_name, images))
            results[saved.stem] = "ok"
        except Exception as error:
            traceback.print_exc()
            results[saved.stem] = error_line(error)
    return results


def worker(task, out, sample_path, epochs, bf16_epochs):
    import keras

    from kerasvit.runs import environment, folders

    backend = keras.backend.backend()
    sample = dict(np.load(sample_path))
    report = {"backend": backend, "devices": environment.list_devices(),
              "versions": environment.package_versions()}
    if task == "gpu":
        report["checks"] = scratch_model_checks(backend, sample, out, epochs, bf16_epochs)
        report["checks"].update(vit_b16_checks(backend, sample, out))
    else:
        report["reloaded"] = reload_on_cpu(out, sample)
    folders.write_json(out / f"worker-{task}-{backend}.json", report)


# ---- the parent ----

def run_worker(task, backend, args):
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONUNBUFFERED="1")
    if task == "cpu":
        env.update(CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    command = [sys.executable, "-m", "bench.gpu_check", "--worker", task, "--sample",
               str(args.sample), "--out", str(args.out), "--epochs", str(args.epochs),
               "--bf16-epochs", str(args.bf16_epochs)]
    print(f"== {task} worker, {backend}", flush=True)
    start = time.perf_counter()
    returncode = subprocess.run(command, env=env).returncode
    print(f"== {task} worker, {backend}: exit {returncode}, {time.perf_counter() - start:.0f} s", flush=True)
    path = args.out / f"worker-{task}-{backend}.json"
    return json.loads(path.read_text()) if path.exists() else {"error": f"worker exit {returncode}"}


def correlation(a, b):
    a, b = a.ravel(), b.ravel()
    if a.std() == 0 or b.std() == 0:
        return float(np.array_equal(a, b))
    return float(np.corrcoef(a, b)[0, 1])


def compare_reloads(out):
    """GPU outputs against the CPU's, for every saved model and reloading backend."""
    rows = []
    for gpu_file in sorted(out.glob("*-gpu.npz")):
        origin_model = gpu_file.name[:-len("-gpu.npz")]
        gpu = np.load(gpu_file)
        for cpu_file in sorted(out.glob(f"{origin_model}-cpu-*.npz")):
            cpu = np.load(cpu_file)
            rows.append({
                "model": origin_model, "reloaded_on": cpu_file.stem.rsplit("-", 1)[-1] + " (cpu)",
                "max_probability_difference": float(np.abs(gpu["probabilities"] - cpu["probabilities"]).max()),
                "same_predictions": int((gpu["probabilities"].argmax(-1) == cpu["probabilities"].argmax(-1)).sum()),
                "images": len(gpu["probabilities"]),
                "map_correlation": correlation(gpu["map"], cpu["map"]),
            })
    return rows


def markdown(report):
    lines = ["# kerasvit on a GPU", "", f"Created {report['created']} by `{report['command']}`.", ""]
    for backend, result in report["gpu"].items():
        lines += [f"## {backend} on {', '.join(result.get('devices', ['?']))}", "",
                  "| check | epochs x images | loss before -> last epoch | test acc | train img/s "
                  "| eval img/s | first step s |", "|---|---|---|---|---|---|---|"]
        for name, check in result.get("checks", {}).items():
            if "error" in check:
                lines.append(f"| {name} | failed: {check['error']} | | | | | |")
                continue
            lines.append(
                f"| {name} | {check['epochs']} x {check['train_images']} | {check['loss_before']:.3f} -> "
                f"{check['train_loss_per_epoch'][-1]:.3f} | {check['test_accuracy']:.3f} | "
                f"{check['train_images_per_s']:.0f} | {check['eval_images_per_s']:.0f} | "
                f"{check['first_step_s']:.1f} |")
        lines.append("")
    lines += ["## Saved on the GPU, reloaded on the CPU", "",
              "| model (saved by) | reloaded on | max prob. difference | same prediction | map correlation |",
              "|---|---|---|---|---|"]
    for row in report["reloads"]:
        lines.append(f"| {row['model']} | {row['reloaded_on']} | {row['max_probability_difference']:.2e} | "
                     f"{row['same_predictions']}/{row['images']} | {row['map_correlation']:.4f} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--make-sample", type=Path, help="write the CIFAR-10 sample here and exit")
    parser.add_argument("--sample", type=Path)
    parser.add_argument("--out", type=Path, default=Path("gpu_check"))
    parser.add_argument("--epochs", type=int, default=10, help="fp32 epochs on the sample")
    parser.add_argument("--bf16-epochs", type=int, default=3)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--worker", choices=("gpu", "cpu"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_sample:
        return make_sample(args.make_sample)
    if args.sample is None or not args.sample.is_file():
        parser.error("--sample: give the .npz made with --make-sample")
    if args.worker:
        return worker(args.worker, args.out, args.sample, args.epochs, args.bf16_epochs)
    args.out.mkdir(parents=True, exist_ok=True)
    backends = args.backends.split(",")
    report = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": " ".join(sys.argv),
              "gpu": {b: run_worker("gpu", b, args) for b in backends},
              "cpu": {b: run_worker("cpu", b, args) for b in backends}}
    report["reloads"] = compare_reloads(args.out)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=float))
    (args.out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    sys.exit(main())
