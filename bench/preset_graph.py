"""Issue 21 on the CPU: keras-hub's PipelineModel (the preset's image converter outside the
model, as kerasvit's vit_b16 and pretrained were) against kerasvit's one-graph preset model
(kerasvit.models.preset_graph: Resizing + Rescaling inside), side by side in one run, on a
small 224-px ViT preset this script builds and saves itself (random weights; DeiT-Tiny's
size by default: patches of 16, 4 blocks, width 192, 3 heads).

    python bench/preset_graph.py --json preset_graph.json                  # every backend
    python bench/preset_graph.py --backends jax --repeats 2 --batch 8      # smoke run
    python bench/preset_graph.py --cli --before-checkout /tmp/kerasvit-before --json out.json

Per backend (each in its own process: Keras fixes the backend at import), one train step
(`train_on_batch`, the loss read back) and one `predict_on_batch` (the logits read back):
- old: the PipelineModel fed 224x224 float images (what kerasvit's tf.data stream gave
  it); its converter runs eagerly in train_on_batch/predict_on_batch, outside the compiled
  step. The stream's own 32 -> 224 resize is not timed (it ran on the host beforehand).
- new-224: the one-graph model fed the same 224x224 images (the graph's gain alone).
- new-32: the one-graph model fed CIFAR's raw 32x32 uint8 images, as kerasvit now feeds it
  (the resize runs in the compiled step).
Figures: images/s = batch / median seconds over `--repeats` calls, after `--warmup` calls
(compilation excluded). The contenders alternate call by call, so drift hits them alike.

`--cli` also makes a run folder with the new path (`kerasvit.train`, one step) and times
`python -m kerasvit.evaluate` and `python -m kerasvit.predict` on `--test-images` test
images (wall time of the whole command, process start included). `--before-checkout DIR`
runs the same two commands with the code at DIR (e.g. `git worktree add DIR <commit before
issue 21>`) on a copy of the run whose model.keras is the same weights saved the old way, in
the order new, old, old, new; each side's figure is the mean of its two runs.

Prints the figures; `--json PATH` writes them. Time it only on an otherwise idle machine.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BACKENDS = ("tensorflow", "jax", "torch")
# DeiT-Tiny's layout at 224: what a small real preset costs, far below ViT-B/16's 86M.
ARCH = dict(image_shape=(224, 224, 3), patch_size=16, num_layers=4, num_heads=3,
            hidden_dim=192, mlp_dim=768)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma-separated (default: all three)")
    parser.add_argument("--batch", type=int, default=32, help="images per call (default 32)")
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed calls per contender (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2)")
    parser.add_argument("--num-layers", type=int, default=ARCH["num_layers"])
    parser.add_argument("--hidden-dim", type=int, default=ARCH["hidden_dim"])
    parser.add_argument("--cli", action="store_true",
                        help="also time kerasvit.evaluate and kerasvit.predict on a run folder")
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--before-checkout", type=Path,
                        help="a kerasvit checkout from before issue 21 for the CLI's old path")
    parser.add_argument("--work-dir", type=Path, help="where the preset and runs go "
                                                      "(default: a new folder in /tmp)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # JSON spec: one backend's run
    return parser.parse_args(argv)


# ---------------------------------------------------------------- worker (one backend)

def make_preset(path, num_layers, hidden_dim):
    """A random 224-px ViT classifier preset with ImageNet normalisation, as a downloaded
    one would be saved (save_to_preset)."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    arch = dict(ARCH, num_layers=num_layers, hidden_dim=hidden_dim, mlp_dim=4 * hidden_dim)
    converter = keras_hub.layers.ViTImageConverter(
        image_size=arch["image_shape"][:2], scale=[1 / (255 * s) for s in IMAGENET_STD],
        offset=[-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    classifier = keras_hub.models.ViTImageClassifier(
        backbone=keras_hub.models.ViTBackbone(**arch), num_classes=1000,
        preprocessor=keras_hub.models.ViTImageClassifierPreprocessor(image_converter=converter))
    classifier.save_to_preset(str(path))


def compiled_models(preset, backend):
    """{"old": PipelineModel, "new": one-graph model}, each built from the preset and
    compiled with kerasvit's vit_b16 recipe (AdamW, warmup-cosine, jit_compile auto)."""
    from kerasvit.config import TrainConfig
    from kerasvit.models import pretrained
    from kerasvit.training import recipe

    config = TrainConfig(model="vit_b16", epochs=1, batch_size=8, learning_rate=3e-5)
    built = {"old": pretrained.load_pipeline_model(preset, "full", 10, 0.0),
             "new": pretrained.load_classifier(preset, "full", 10, 0.0,
                                               backbone_name="ViTBackbone",
                                               model_name="vit_b16")}
    for model in built.values():
        recipe.compile_model(model, config, steps_per_epoch=100, backend=backend)
    return built


def contender_calls(models, batch):
    """name -> (train call, predict call) on in-memory batches."""
    import numpy as np

    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (batch, 32, 32, 3)).astype("uint8")
    from kerasvit.data import stream

    resized = stream.prepare_images(raw, (224, 224))  # as the old tf.data stream fed it
    labels = np.eye(10, dtype="float32")[rng.integers(0, 10, batch)]
    feeds = {"old": (models["old"], resized), "new-224": (models["new"], resized),
             "new-32": (models["new"], raw)}
    calls = {}
    for name, (model, images) in feeds.items():
        calls[name] = (
            lambda m=model, x=images: float(m.train_on_batch(x, labels, return_dict=True)["loss"]),
            lambda m=model, x=images: np.asarray(m.predict_on_batch(x)).sum())
    return calls


def median_images_per_s(times, batch):
    import numpy as np

    return float(batch / np.median(times)) if times else None


def time_calls(calls, batch, repeats, warmup):
    """{name: {"train_images_per_s", "predict_images_per_s"}}, alternating the contenders."""
    times = {name: {"train": [], "predict": []} for name in calls}
    for kind, index in (("train", 0), ("predict", 1)):
        for repeat in range(warmup + repeats):
            for name, pair in calls.items():
                start = time.perf_counter()
                pair[index]()
                if repeat >= warmup:
                    times[name][kind].append(time.perf_counter() - start)
    return {name: {f"{kind}_images_per_s": median_images_per_s(seconds, batch)
                   for kind, seconds in kinds.items()} for name, kinds in times.items()}


def worker(spec):
    import keras

    backend = keras.backend.backend()
    preset = Path(spec["work_dir"]) / "preset"
    if not preset.exists():
        make_preset(preset, spec["num_layers"], spec["hidden_dim"])
    built = compiled_models(str(preset), backend)
    calls = contender_calls(built, spec["batch"])
    result = {"backend": backend, "steps": time_calls(calls, spec["batch"], spec["repeats"],
                                                      spec["warmup"]),
              "jit_compile": bool(built["new"].jit_compile)}
    Path(spec["out"]).write_text(json.dumps(result, indent=2))  # kept if the CLIs fail
    if spec["cli"]:
        try:
            result["cli"] = cli_times(spec, backend, preset)
        except Exception as error:  # noqa: BLE001  (reported with the step figures)
            lines = str(error).strip().splitlines()
            result["cli_error"] = f"{lines[0]} {lines[-1][:300]}"
        Path(spec["out"]).write_text(json.dumps(result, indent=2))


# ---------------------------------------------------------------- the CLIs

def cli_env(backend, checkout=REPO):
    return {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(checkout),
            "TF_CPP_MIN_LOG_LEVEL": "3"}


def run_timed(args, backend, checkout=REPO, cwd=None):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", *args], env=cli_env(backend, checkout),
                          cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args[:2])} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def cli_times(spec, backend, preset):
    """Wall seconds of kerasvit.evaluate and kerasvit.predict on the new run (and the old
    one with --before-checkout)."""
    work = Path(spec["work_dir"]) / backend
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    new_run = work / "run-new"
    run_timed(["kerasvit.train", "--model", "vit_b16", "--preset", str(preset),
               "--epochs", "1", "--batch-size", "8", "--subset-per-class", "3",
               "--set", "validation_size=10", "--set", "test_images=10",
               "--mixed-precision", "off", "--run-dir", str(new_run)], backend, cwd=work)
    files = write_test_pngs(work / "images", spec["test_images"])
    if not spec["before_checkout"]:
        return {"new": commands_seconds(new_run, files, spec["test_images"], backend, REPO)}
    sides = {"new": (new_run, REPO),
             "old": (old_style_copy(new_run, work / "run-old", preset), spec["before_checkout"])}
    # new, old, old, new: the machine's drift between commands minutes apart (up to 45% on
    # these CPUs) falls on both sides alike; each side's figure is the mean of its two runs.
    runs = {"new": [], "old": []}
    for name in ("new", "old", "old", "new"):
        run_dir, checkout = sides[name]
        runs[name].append(commands_seconds(run_dir, files, spec["test_images"], backend,
                                           checkout))
    return {name: {"evaluate_s": statistics.mean(r["evaluate_s"] for r in side),
                   "predict_s": statistics.mean(r["predict_s"] for r in side),
                   "images": spec["test_images"], "runs": side}
            for name, side in runs.items()}


def commands_seconds(run_dir, files, test_images, backend, checkout):
    evaluate = ["kerasvit.evaluate", str(run_dir), "--test-images", str(test_images),
                "--timing-repeats", "1", "--out", str(run_dir / f"eval-{time.time_ns()}")]
    predict = ["kerasvit.predict", "--model", str(run_dir), "--json", *map(str, files)]
    return {"evaluate_s": run_timed(evaluate, backend, checkout),
            "predict_s": run_timed(predict, backend, checkout), "images": test_images}


def write_test_pngs(folder, count):
    from PIL import Image

    from kerasvit.data import cifar

    images, _ = cifar.load_test_images(cifar.resolve_data_dir(""), count)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{index:05d}.png" for index in range(len(images))]
    for path, image in zip(paths, images):
        Image.fromarray(image).save(path)
    return paths


def old_style_copy(new_run, old_run, preset):
    """A copy of the run whose model.keras is keras-hub's PipelineModel with the same
    weights, as runs were saved before issue 21."""
    from kerasvit.models import preset_graph, pretrained
    from kerasvit.runs import loading

    shutil.copytree(new_run, old_run)
    trained = loading.load_model(new_run)
    classifier = pretrained.load_pipeline_model(str(preset), "full", 10, 0.0)
    preset_graph.from_pipeline_model(classifier).set_weights(trained.get_weights())
    classifier.save(old_run / "model.keras")
    return old_run


# ---------------------------------------------------------------- parent

def run_backend(backend, args, work_dir):
    out = work_dir / f"{backend}.json"
    spec = {"work_dir": str(work_dir), "batch": args.batch, "repeats": args.repeats,
            "warmup": args.warmup, "num_layers": args.num_layers, "hidden_dim": args.hidden_dim,
            "cli": args.cli, "test_images": args.test_images, "out": str(out),
            "before_checkout": str(args.before_checkout) if args.before_checkout else None}
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                          env=cli_env(backend), capture_output=True, text=True)
    if done.returncode or not out.exists():
        return {"backend": backend, "error": done.stderr.strip().splitlines()[-6:]}
    return json.loads(out.read_text())


def print_figures(results, args):
    print(f"preset: ViT patch 16 at 224, {args.num_layers} blocks, width {args.hidden_dim}; "
          f"batch {args.batch}, median of {args.repeats} calls after {args.warmup}")
    print(f"{'backend':<11} {'contender':<9} {'train img/s':>12} {'predict img/s':>14}")
    for result in results:
        if "error" in result:
            print(f"{result['backend']:<11} failed: {result['error']}")
            continue
        for name, figures in result["steps"].items():
            print(f"{result['backend']:<11} {name:<9} {figures['train_images_per_s']:>12.1f} "
                  f"{figures['predict_images_per_s']:>14.1f}")
        if "cli_error" in result:
            print(f"{result['backend']:<11} CLIs failed: {result['cli_error']}")
        for name, seconds in result.get("cli", {}).items():
            print(f"{result['backend']:<11} {name:<9} evaluate {seconds['evaluate_s']:.1f} s, "
                  f"predict {seconds['predict_s']:.1f} s on {seconds['images']} test images")


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    work_dir = args.work_dir or Path(f"/tmp/preset-graph-bench-{os.getpid()}")
    work_dir.mkdir(parents=True, exist_ok=True)
    results = [run_backend(backend, args, work_dir) for backend in args.backends.split(",")]
    print_figures(results, args)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=2))
    return 1 if any("error" in result for result in results) else 0


if __name__ == "__main__":
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    sys.exit(main())
