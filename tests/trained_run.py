"""One tiny scratch-ViT run, trained once per pytest process and shared by the evaluation,
predict, cross-backend and TensorBoard tests (a plain module, not a fixture, so that every
test module's session fixture gets the same run: the training costs ~30 s on 2 CPU cores).

The ViT rather than the CNN: its custom layers are what cross-backend loading must register.
"""

import functools
from pathlib import Path

TINY_VIT_FLAGS = [
    "--model", "vit", "--subset-per-class", "10", "--epochs", "1", "--batch-size", "50",
    "--set", "validation_size=500", "--set", "model_args.num_layers=1",
    "--set", "model_args.hidden_dim=32", "--set", "model_args.mlp_dim=64",
    "--set", "model_args.num_heads=2", "--set", "model_args.stem_widths=[16, 32]",
    # The default recipe also tests with 6-view TTA, which no test of this run reads: on the
    # 10,000 test images it took 235 s of the torch pass.
    "--set", "test_time_augmentation=false",
    "--mixed-precision", "off",  # float32: compared to 1e-6
]


@functools.lru_cache(maxsize=1)
def tiny_vit_run(base_dir):
    """Trains the tiny ViT under this process's backend into `base_dir`; returns its folder."""
    from kerasvit.cli import train

    return Path(train.main(TINY_VIT_FLAGS + ["--run-dir", str(Path(base_dir) / "tiny-vit")]))
