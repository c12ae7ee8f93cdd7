"""Model registry: name -> the module that defines the model.

Every model module exports `SPEC`, a `ModelSpec`: its builder (explicit keyword arguments;
float32 images in [0, 255] -> class logits), the small arguments its tests build it with, and
what kerasvit.explain uses: the layer whose feature map Grad-CAM weighs, or a function that
returns the attention scores of every encoder block.
"""

import dataclasses
import importlib
from typing import Callable, Optional

MODEL_MODULES = {
    "cnn": "kerasvit.models.cnn",
    "vit": "kerasvit.models.vit",
    "vit_b16": "kerasvit.models.vit_b16",
    "resnet18": "kerasvit.models.resnet",
    "mobilenet": "kerasvit.models.mobilenet",
    "alexnet": "kerasvit.models.alexnet",
    "pretrained": "kerasvit.models.pretrained",
}
MODEL_NAMES = tuple(MODEL_MODULES)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable
    description: str
    # Builder arguments of a small but real version, for the tests (None: the model has its
    # own, e.g. vit_b16 needs a preset the tests save first).
    tiny_args: Optional[dict] = None
    # model -> name of the layer whose output Grad-CAM explains.
    gradcam_layer: Optional[Callable] = None
    # (model, float images in [0, 255]) -> list of (batch, heads, tokens, tokens) scores.
    attention_scores: Optional[Callable] = None
    # model -> "gradcam" or "attention", where that depends on the loaded model (pretrained:
    # its preset's family); it raises a one-line ExplainError for a model it cannot explain.
    method_of: Optional[Callable] = None

    @property
    def explain_method(self):
        return "gradcam" if self.gradcam_layer else "attention"

    def explain_method_of(self, model=None):
        """The explain method for `model` (the registry's static choice without one)."""
        if self.method_of is not None and model is not None:
            return self.method_of(model)
        return self.explain_method


def pooled_feature_map(model):
    """The layer whose output the model's `features` layer pools: the last feature map of
    a CNN whose head sits on a global pool named `features` (timm's split of features and
    head), which is what Grad-CAM explains."""
    pooled = model.get_layer("features").input
    return next(layer.name for layer in model.layers if layer.output is pooled)


def get_spec(name):
    # Modules are imported here, not at the top, so that `kerasvit.models` can be listed
    # (e.g. for --help) before keras is imported.
    if name not in MODEL_MODULES:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return importlib.import_module(MODEL_MODULES[name]).SPEC


def build_model(name, **kwargs):
    return get_spec(name).builder(**kwargs)


def image_size(model):
    """(height, width) the model computes at. Preset models (vit_b16, pretrained) take
    images of any size and resize them themselves: their Resizing layer's size
    (kerasvit.models.preset_graph); every other model: its input's."""
    from kerasvit.models import preset_graph

    return preset_graph.image_size(model) or tuple(int(s) for s in model.input_shape[1:3])


def feed_size(model, native_size):
    """The size to give the model images of `native_size` at. A preset model takes them as
    they are (the resize then runs in its compiled step, on the accelerator), unless its
    size has another aspect ratio: its Resizing layer would crop where the host's resize
    stretches. Every other model: its image size (the data pipeline resizes)."""
    from kerasvit.models import preset_graph

    size = image_size(model)
    native = tuple(int(s) for s in native_size)
    if preset_graph.is_preset_graph(model) and native[0] * size[1] == native[1] * size[0]:
        return native
    return size
