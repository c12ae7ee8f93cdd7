"""Where a training step's time goes: kerasvit's model on Keras-on-torch against the native
PyTorch network of bench/native_models.py, under torch.profiler, same batch and precision.

    python bench/profile_step.py --model cnn
    python bench/profile_step.py --model vit --bf16 --steps 5 --top 20

Prints, per contender, the operators that take the most self CPU time over `--steps` timed
steps (after `--warmup` steps), and the share of layout copies (permute/transpose/copy_/
contiguous), which is what Keras' NHWC-on-torch costs around every convolution. Runs on the
CPU; one process, Keras on torch (set here, before keras is imported).
"""

import argparse
import os
import sys
from pathlib import Path

os.environ["KERAS_BACKEND"] = "torch"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LAYOUT_OPS = ("aten::permute", "aten::transpose", "aten::copy_", "aten::contiguous",
              "aten::clone", "aten::_to_copy")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("cnn", "vit"), default="cnn")
    parser.add_argument("--bf16", action="store_true", help="mixed bf16 (Keras policy / autocast)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--top", type=int, default=12)
    return parser.parse_args()


def keras_step(args, config, images, labels):
    import keras

    from kerasvit import models
    from kerasvit.training import recipe

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if args.bf16 else "float32")
    model = models.build_model(args.model, **config.model_args)
    recipe.compile_model(model, config, steps_per_epoch=100, backend="torch")
    one_hot = keras.utils.to_categorical(labels, 10)
    return lambda: float(model.train_on_batch(images, one_hot, return_dict=True)["loss"])


def native_step(args, config, images, labels):
    import torch
    import torch.nn.functional as F

    from bench import native_models

    module = native_models.build_native(args.model, **config.model_args)
    optimizer, scheduler, _ = native_models.make_optimizer(
        module, config.to_dict(), steps_per_epoch=100)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(labels).long()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = F.cross_entropy(module(x), y, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return loss.item()

    return step


def profile(name, step, args):
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for _ in range(args.warmup):
        step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    layout = sum(e.self_cpu_time_total for e in events if e.key in LAYOUT_OPS)
    print(f"\n## {name}: {total / 1e3 / args.steps:.0f} ms of operator time per step, "
          f"layout copies {100 * layout / total:.1f}%")
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top))


def main():
    args = parse_args()
    import numpy as np

    from kerasvit.config import config_path_for_model, load_config_file

    config = load_config_file(config_path_for_model(args.model))
    config.batch_size = args.batch_size  # sizes nesterov_sgd's step (both contenders)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.batch_size, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 10, args.batch_size)
    precision = "bf16" if args.bf16 else "fp32"
    profile(f"keras-torch-{precision} ({args.model})", keras_step(args, config, images, labels), args)
    profile(f"native-{precision} ({args.model})", native_step(args, config, images, labels), args)


if __name__ == "__main__":
    main()
