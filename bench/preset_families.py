"""Parameters and CPU images/s of the `pretrained` model per keras-hub family, at its input size.

The real ImageNet weights cannot be downloaded on these machines, so each family is built at
its preset's full size (the architecture keras-hub's own timm converters give, or the DeiT
paper's) with random weights, wrapped in its ImageClassifier with an ImageNet image converter at
224x224, and saved with `save_to_preset`: a local preset folder, loaded by kerasvit's
`pretrained` builder exactly as `--preset /path` does. The parameter count is checked against
the count keras-hub publishes for the real preset (weights do not change it).

Per backend (one worker process each, in turn, in one run), per family: training images/s for
`--finetune full` and `--finetune linear` (Keras `fit` on a repeated in-memory batch of 224x224
[0, 255] images, compiled by kerasvit's recipe with the family's config, the precision
`--mixed-precision auto` picks; median interval between step ends, device synced, warm-up
excluded) and `predict_on_batch` images/s (kerasvit.evaluate's measure).

    python bench/preset_families.py --json preset-families.json --md preset-families.md
    python bench/preset_families.py --families resnet_18,deit_tiny --backends jax --steps 2
"""

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import machine  # noqa: E402
from bench.throughput import other_cpu_share  # noqa: E402

IMAGE_SIZE = (224, 224)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# family -> (the real preset it stands for, its config in configs/, how to build it).
FAMILIES = {
    "resnet_18": ("resnet_18_imagenet", "pretrained_resnet", ("resnet", "resnet18")),
    "resnet_50": ("resnet_50_imagenet", "pretrained_resnet", ("resnet", "resnet50")),
    "mobilenet_v3_small": ("mobilenet_v3_small_100_imagenet", "pretrained_mobilenet",
                           ("mobilenet", "mobilenetv3_small_100")),
    "mobilenet_v3_large": ("mobilenet_v3_large_100_imagenet", "pretrained_mobilenet",
                           ("mobilenet", "mobilenetv3_large_100")),
    "efficientnet_b0": ("efficientnet_b0_ra_imagenet", "pretrained_resnet",
                        ("efficientnet", "efficientnet_b0")),
    "densenet_121": ("densenet_121_imagenet", "pretrained_resnet", ("densenet", "densenet121")),
    "deit_tiny": ("deit_tiny_distilled_patch16_224_imagenet", "pretrained_deit", ("deit", "tiny")),
}
# DeiT-Tiny (Touvron et al. 2021): 16x16 patches, 12 blocks of width 192, 3 heads.
DEIT_TINY = dict(patch_size=16, num_layers=12, num_heads=3, hidden_dim=192, intermediate_dim=768)


def save_family_preset(family, folder):
    """Builds `family` at full size with random weights and saves it as a local preset."""
    import keras
    import keras_hub

    kind, architecture = FAMILIES[family][2]
    # Saved in float32, as real presets are: keras-hub cannot load a MobileNet preset saved
    # under the mixed_bfloat16 policy ("Invalid dtype: mixed_bfloat16").
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(0)
    models, layers = keras_hub.models, keras_hub.layers
    if kind == "deit":
        backbone = models.DeiTBackbone(image_shape=(*IMAGE_SIZE, 3), **DEIT_TINY)
        classes = layers.DeiTImageConverter, models.DeiTImageClassifier
    else:
        # keras-hub's timm converters hold the real presets' architectures.
        converter_module = importlib.import_module(f"keras_hub.src.utils.timm.convert_{kind}")
        backbone = converter_module.backbone_cls(**converter_module.convert_backbone_config(
            {"architecture": architecture}))
        names = {"resnet": "ResNet", "mobilenet": "MobileNet", "efficientnet": "EfficientNet",
                 "densenet": "DenseNet"}
        classes = (getattr(layers, f"{names[kind]}ImageConverter"),
                   getattr(models, f"{names[kind]}ImageClassifier"))
    converter_class, classifier_class = classes
    converter = converter_class(image_size=IMAGE_SIZE, scale=[1 / (255 * s) for s in IMAGENET_STD],
                                offset=[-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    preprocessor = classifier_class.preprocessor_cls(image_converter=converter)
    classifier = classifier_class(backbone=backbone, num_classes=1000, preprocessor=preprocessor)
    classifier.save_to_preset(str(folder))
    return backbone.count_params()


def published_params(family):
    """The parameter count keras-hub lists for the real preset (its backbone)."""
    import keras_hub

    preset = FAMILIES[family][0]
    for classifier_class in _classifier_classes(keras_hub):
        presets = classifier_class.backbone_cls.presets
        if preset in presets:
            return presets[preset]["metadata"]["params"]
    return None


def _classifier_classes(keras_hub):
    from kerasvit.models.pretrained import image_classifier_classes

    return image_classifier_classes(keras_hub)


def time_training(model, images, labels, steps, warmup):
    """Images/s of `model.fit`: batch / median interval between step ends."""
    import tensorflow as tf

    from bench.keras_side import StepTimer

    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    model.fit(dataset, steps_per_epoch=warmup, epochs=1, verbose=0)
    timer = StepTimer()
    model.fit(dataset, steps_per_epoch=steps + 1, epochs=1, verbose=0, callbacks=[timer])
    return len(images) / statistics.median(timer.times[1:])


def time_prediction(model, images, steps, warmup):
    for _ in range(warmup):
        model.predict_on_batch(images)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.predict_on_batch(images)
        times.append(time.perf_counter() - start)
    return len(images) / statistics.median(times)


def measure_family(family, folder, args, backend):
    import keras
    import numpy as np

    from kerasvit.config import resolve
    from kerasvit.models import build_model
    from kerasvit.training import precision, recipe

    config = resolve(REPO / "configs" / f"{FAMILIES[family][1]}.toml", None, {}, [])
    mixed = precision.set_precision(config.mixed_precision, backend)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.batch_size, *IMAGE_SIZE, 3)).astype("float32")
    labels = np.eye(10, dtype="float32")[rng.integers(0, 10, args.batch_size)]
    row = {"family": family, "preset": FAMILIES[family][0], "config": FAMILIES[family][1],
           "batch_size": args.batch_size, "bf16": mixed["enabled"]}
    for finetune in ("full", "linear"):
        keras.utils.set_random_seed(0)
        model = build_model("pretrained", preset=str(folder), finetune=finetune)
        recipe.compile_model(model, config, steps_per_epoch=1000, backend=backend)
        row[f"trainable_{finetune}"] = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        row["params"] = model.count_params()
        row[f"train_images_per_s_{finetune}"] = time_training(
            model, images, labels, args.steps, args.warmup)
        if finetune == "full":
            row["predict_images_per_s"] = time_prediction(model, images, args.steps, args.warmup)
    return row


def worker(args):
    """One backend: save each family's preset, measure it; one JSON line per family."""
    import keras

    backend = keras.backend.backend()
    with tempfile.TemporaryDirectory() as scratch:
        for family in args.families.split(","):
            folder = Path(scratch) / family
            try:
                backbone_params = save_family_preset(family, folder)
                row = measure_family(family, folder, args, backend)
                row.update(backbone_params=backbone_params,
                           published_backbone_params=published_params(family))
            except Exception as error:  # a family that fails is a row of the table too
                row = {"family": family, "preset": FAMILIES[family][0],
                       "error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
            row["backend"] = backend
            print("ROW " + json.dumps(row), flush=True)


def run_backends(args):
    rows = []
    for backend in args.backends.split(","):
        command = [sys.executable, __file__, "--worker", "--families", args.families,
                   "--batch-size", str(args.batch_size), "--steps", str(args.steps),
                   "--warmup", str(args.warmup)]
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        print(f"--- {backend}", file=sys.stderr, flush=True)
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        for line in done.stdout.splitlines():
            if line.startswith("ROW "):
                rows.append(json.loads(line[4:]))
                print(f"    {rows[-1]['family']}: {format_row(rows[-1])}", file=sys.stderr)
        if done.returncode:
            print(f"{backend} worker failed:\n{done.stderr[-3000:]}", file=sys.stderr)
    return rows


def format_row(row):
    if "error" in row:
        return f"fails: {row['error']}"
    return (f"train {row['train_images_per_s_full']:.1f} (full) / "
            f"{row['train_images_per_s_linear']:.1f} (linear), "
            f"predict {row['predict_images_per_s']:.1f} images/s")


def markdown(rows, info):
    lines = [f"CPU: {info['cpu']['model']}, {info['cpu']['usable_cpus']} cores, bf16 "
             f"instructions: {info['cpu']['bf16_hardware']}; batch {info['batch_size']} at "
             f"224x224; random weights at the real preset's size. Other processes took "
             f"{info['other_cpu_share'] or 0:.0%} of the CPU during the run.", "",
             "| family (preset) | backend | params | published backbone | trainable (linear) "
             "| bf16 | train img/s full | train img/s linear | predict img/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: (list(FAMILIES).index(r["family"]), r["backend"])):
        if "error" in row:
            lines.append(f"| {row['family']} ({row['preset']}) | {row['backend']} | fails: "
                         f"{row['error']} |||||||")
            continue
        lines.append(
            f"| {row['family']} ({row['preset']}) | {row['backend']} | {row['params']:,} | "
            f"{row['published_backbone_params'] or 0:,} | {row['trainable_linear']:,} | "
            f"{'yes' if row['bf16'] else 'no'} | {row['train_images_per_s_full']:.1f} | "
            f"{row['train_images_per_s_linear']:.1f} | {row['predict_images_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (default 3)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--json", help="write the rows and the machine here")
    parser.add_argument("--md", help="write the markdown table here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = set(args.families.split(",")) - set(FAMILIES)
    if unknown:
        parser.error(f"unknown families {', '.join(sorted(unknown))}; known: {', '.join(FAMILIES)}")
    if args.worker:
        return worker(args)
    cpu_before, start = machine.busy_cpu_seconds(), time.perf_counter()
    rows = run_backends(args)
    wall = time.perf_counter() - start
    info = {"cpu": machine.cpu_info(), "versions": machine.versions(), "wall_s": wall,
            "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
            "other_cpu_share": other_cpu_share(cpu_before, machine.busy_cpu_seconds(), wall,
                                               machine.cpu_info()["usable_cpus"])}
    text = markdown(rows, info) if rows else "no rows\n"
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "machine": info}, indent=1))
    if args.md:
        Path(args.md).write_text(text)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
