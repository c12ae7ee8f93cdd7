"""Model registry: name -> builder. Every builder takes explicit keyword arguments and
returns a Keras model that maps float32 images in [0, 255] to class logits."""

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable
    description: str
    explain_method: str  # "gradcam" or "attention": what kerasvit.explain uses.


def _registry():
    # Builders are imported here, not at module level, so that `kerasvit.models` can be
    # listed (e.g. for --help) before keras is imported.
    from kerasvit.models.cnn import build_cnn
    from kerasvit.models.mobilenet import build_mobilenet
    from kerasvit.models.resnet import build_resnet18
    from kerasvit.models.vit import build_vit
    from kerasvit.models.vit_b16 import build_vit_b16

    return {
        "cnn": ModelSpec("cnn", build_cnn, "airbench-style CNN for 32x32, ~1.2M params", "gradcam"),
        "vit": ModelSpec("vit", build_vit, "ViT from Keras layers for 32x32 (patch 4), ~1.8M params", "attention"),
        "vit_b16": ModelSpec("vit_b16", build_vit_b16, "keras-hub ViT-B/16 fine-tuned at 224x224, ~86M params", "attention"),
        "resnet18": ModelSpec("resnet18", build_resnet18, "CIFAR ResNet-18 (3x3 stem, no max-pool), ~11.2M params", "gradcam"),
        "mobilenet": ModelSpec("mobilenet", build_mobilenet, "MobileNetV2 with CIFAR strides for 32x32, ~2.3M params", "gradcam"),
    }


MODEL_NAMES = ("cnn", "vit", "vit_b16", "resnet18", "mobilenet")


def get_spec(name):
    if name not in MODEL_NAMES:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return _registry()[name]


def build_model(name, **kwargs):
    return get_spec(name).builder(**kwargs)
