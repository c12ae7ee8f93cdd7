"""Any keras-hub image classifier preset with a new 10-class head: fine-tuned or linear-probed.

`preset` is a keras-hub preset name (downloaded from Kaggle: resnet_18_imagenet,
mobilenet_v3_small_100_imagenet, deit_tiny_distilled_patch16_224_imagenet, ...) or a local
preset folder made with `save_to_preset`. `keras_hub.models.ImageClassifier.from_preset`
picks the family's classifier (ResNetImageClassifier, DeiTImageClassifier, ...) from the
preset; the head is new (random, 10 classes, float32 logits), the backbone keeps the
preset's weights. The model is one Keras graph from raw [0, 255] pixels of any size (uint8
or float) to logits (kerasvit.models.preset_graph): the preset's image converter (its
input size and normalisation) becomes `Resizing` and `Rescaling` layers in front of the
backbone, so they run inside the compiled step, on the accelerator, and the saved
`model.keras` carries them. Convolutional backbones, which accept any size, are built at
the converter's size (`kerasvit.models.image_size` reads it from the Resizing layer).

finetune="full" trains every weight; "linear" freezes the backbone (its BatchNorm
statistics included) and trains only the head: the classifier's layers after the backbone
(a dense layer; MobileNet's head also has its 1x1 convolution to 1024 features).

Explain: Grad-CAM on the backbone's last feature map for convolutional families, attention
maps for ViT and DeiT; other families (Swin, MiT) cannot be explained and say so in one line.
"""

import inspect
import json
import os
import re
from pathlib import Path

from kerasvit.errors import UserError
from kerasvit.models import ModelSpec

DEFAULT_PRESET = "resnet_18_imagenet"
# A linear probe trains only the new head, so it takes a far larger step than a full
# fine-tune (5e-5 to 3e-4 in configs/pretrained_*.toml); every family's _linear config uses it.
LINEAR_PROBE_LEARNING_RATE = 1e-3
FINETUNE_MODES = ("full", "linear")
# Backbones whose class token's attention kerasvit.explain maps (keras-hub class names), and
# the tokens before the patches: ViT has a class token, DeiT a class and a distillation token.
ATTENTION_FAMILIES = {"ViTBackbone": 1, "DeiTBackbone": 2}


class PresetError(UserError, RuntimeError):
    """The preset cannot be loaded; the message is shown to the user as one line."""


def build_pretrained(
    *,
    preset=DEFAULT_PRESET,
    finetune="full",
    num_classes=10,
    dropout_rate=0.0,
):
    """Loads `preset` into its family's keras-hub classifier with a new head, as one graph
    from raw pixels to logits."""
    return load_classifier(preset, finetune, num_classes, dropout_rate)


def load_classifier(preset, finetune, num_classes, dropout_rate, backbone_name=None,
                    default_preset=DEFAULT_PRESET, model_name="pretrained"):
    """The one-graph model of `build_pretrained`, named `model_name`; `backbone_name` (e.g.
    "ViTBackbone") restricts the presets to one family, for the registry entry `model_name`
    (vit_b16)."""
    from kerasvit.models import preset_graph

    classifier = load_pipeline_model(preset, finetune, num_classes, dropout_rate,
                                     backbone_name, default_preset, model_name)
    return preset_graph.from_pipeline_model(classifier, name=model_name)


def load_pipeline_model(preset, finetune, num_classes, dropout_rate, backbone_name=None,
                        default_preset=DEFAULT_PRESET, model_name="pretrained"):
    """keras-hub's `ImageClassifier` for the preset with a new head, its image converter
    outside the graph as keras-hub has it (the model before kerasvit.models.preset_graph;
    bench/preset_graph.py times both)."""
    if finetune not in FINETUNE_MODES:
        raise PresetError(f"finetune must be one of {', '.join(FINETUNE_MODES)}, got {finetune!r}")
    import keras_hub

    classifier_class = find_classifier_class(preset, keras_hub, backbone_name, default_preset,
                                             model_name)
    parameters = inspect.signature(classifier_class.__init__).parameters
    # float32 logits under --mixed-precision too, as in the cnn and vit: keras-hub's
    # default (the backbone's bf16) breaks TF's top-5 metric ("InTopKV2 ... bfloat16").
    kwargs = {"num_classes": num_classes, "head_dtype": "float32"}
    if "activation" in parameters:
        kwargs["activation"] = None  # logits, whatever the preset's task saved
    if "dropout" in parameters:
        kwargs["dropout"] = dropout_rate
    elif dropout_rate:
        raise PresetError(f"{classifier_class.__name__} has no dropout before its head; "
                          "set model_args.dropout_rate = 0.0")
    try:
        if resizable(classifier_class):  # built at the size its image converter gives
            preprocessor = classifier_class.preprocessor_cls.from_preset(preset)
            converter = getattr(preprocessor, "image_converter", None)
            if converter is not None and converter.image_size:
                kwargs["image_shape"] = (*converter.image_size, 3)
        classifier = classifier_class.from_preset(preset, **kwargs)
    except Exception as error:
        raise preset_error(preset, error, default_preset) from None
    if getattr(classifier.preprocessor, "image_converter", None) is None:
        if classifier_class.backbone_cls.__name__ != "ViTBackbone":
            raise PresetError(f"preset {preset} has no image converter (its input size and "
                              "normalisation); save it from a classifier that has one "
                              "(classifier.save_to_preset)")
        classifier.preprocessor = default_vit_preprocessor(classifier.backbone, keras_hub)
    # The converter's size is the model's (its Resizing layer); a backbone keras-hub cannot
    # build at that size (EfficientNet: only `image_shape` reaches a backbone from
    # from_preset, and it calls its argument input_shape) stays size-agnostic behind it.
    if not classifier.preprocessor.image_converter.image_size:
        raise PresetError(f"preset {preset} gives no input size (its image converter does "
                          "not resize); save it with an image converter that has image_size")
    classifier.backbone.trainable = finetune == "full"
    return classifier


def image_classifier_classes(keras_hub):
    """Every keras-hub ImageClassifier subclass (one per family)."""
    found, pending = [], [keras_hub.models.ImageClassifier]
    while pending:
        for subclass in pending.pop().__subclasses__():
            if subclass not in found:
                found.append(subclass)
                pending.append(subclass)
    return [cls for cls in found if getattr(cls, "backbone_cls", None) is not None]


def find_classifier_class(preset, keras_hub, backbone_name=None, default_preset=DEFAULT_PRESET,
                          model_name="pretrained"):
    """The family's classifier class for a preset name or folder, or a PresetError."""
    classes = image_classifier_classes(keras_hub)
    if backbone_name:
        classes = [cls for cls in classes if cls.backbone_cls.__name__ == backbone_name]
    family = family_name(backbone_name)
    if looks_like_path(preset):
        found = backbone_of_folder(preset, default_preset)
        for cls in classes:
            if cls.backbone_cls.__name__ == found:
                return cls
        if backbone_name:
            raise wrong_family(preset, found, backbone_name, default_preset, model_name)
        raise PresetError(f"preset {preset} holds a {found} model, for which keras-hub has no "
                          "image classifier; pass an image classifier preset such as "
                          f"{default_preset}")
    for cls in classes:
        if preset in cls.backbone_cls.presets:
            return cls
    known = sorted(name for cls in classes for name in cls.backbone_cls.presets)
    raise PresetError(f"unknown {family} preset {preset!r}; known presets: {', '.join(known)}, "
                      "or a local directory")


def family_name(backbone_name):
    return backbone_name.removesuffix("Backbone") if backbone_name else "image classifier"


def resizable(classifier_class):
    """Whether the family's backbone takes any input size (convolutional families do; ViT,
    DeiT and Swin fix theirs with the position embeddings)."""
    parameter = inspect.signature(classifier_class.backbone_cls.__init__).parameters.get("image_shape")
    default = getattr(parameter, "default", None)
    return isinstance(default, tuple) and None in default


def looks_like_path(preset):
    return os.sep in preset or preset.startswith(".") or os.path.exists(preset)


def backbone_of_folder(preset, default_preset=DEFAULT_PRESET):
    """The keras-hub backbone class name in a local preset folder's config.json; a
    PresetError for folders that are missing, unreadable or not presets."""
    path = Path(preset).expanduser()
    if not path.exists():
        raise PresetError(
            f"preset folder {preset} does not exist; pass a folder made with save_to_preset, "
            f"or a preset name such as {default_preset}")
    if not path.is_dir():
        raise PresetError(f"preset {preset} is a file; pass the folder that save_to_preset wrote")
    try:
        backbone = json.loads((path / "config.json").read_text())
    except FileNotFoundError:
        raise PresetError(f"{preset} is not a keras-hub preset (no config.json); pass a folder "
                          "made with save_to_preset") from None
    except PermissionError:
        raise PresetError(f"preset folder {preset} is not readable (permission denied); fix "
                          "its permissions or pass another --preset") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PresetError(f"cannot read {path / 'config.json'} ({type(error).__name__}); the "
                          "preset is damaged, save it again") from None
    name = backbone.get("registered_name", "") if isinstance(backbone, dict) else ""
    return name.split(">")[-1] or "no keras-hub"


def wrong_family(preset, found, backbone_name, default_preset, model_name):
    family = family_name(backbone_name)
    return PresetError(f"preset {preset} holds a {found} model, not a {family}; --model "
                       f"{model_name} needs a {family} preset, e.g. one saved from {default_preset}")


def check_preset_folder(preset, backbone_name=None, default_preset=DEFAULT_PRESET,
                        model_name="pretrained"):
    """A local preset folder must exist, be readable and hold a keras-hub image classifier
    backbone (of `backbone_name`'s family when given): checked before keras is imported.
    Preset names are left to keras-hub."""
    if not isinstance(preset, str) or not looks_like_path(preset):
        return
    found = backbone_of_folder(preset, default_preset)
    if backbone_name and found != backbone_name:
        raise wrong_family(preset, found, backbone_name, default_preset, model_name)
    if not backbone_name and not found.endswith("Backbone"):
        raise PresetError(f"preset {preset} holds a {found} model; pass a folder that "
                          "save_to_preset wrote for a keras-hub image classifier")


def failure_reason(error):
    """A short reason for a failed load: the host for a connection failure (requests' message
    nests the whole retry chain), else the error's first line."""
    text = str(error).splitlines()[0] if str(error) else ""
    host = re.search(r"host='([^']+)'", text)
    if host and any("ConnectionError" in kind.__name__ for kind in type(error).__mro__):
        return f"no connection to {host.group(1)}"
    return f"{type(error).__name__}: {text[:160]}" if text else type(error).__name__


def preset_error(preset, error, default_preset=DEFAULT_PRESET):
    reason = failure_reason(error)
    if looks_like_path(preset):
        return PresetError(f"could not load the local preset {preset} ({reason}); is it an "
                           "image classifier preset saved with save_to_preset?")
    return PresetError(
        f"could not fetch the weights of preset {preset!r} ({reason}). Without internet "
        "access, download the preset elsewhere (e.g. keras_hub.models.ImageClassifier"
        f".from_preset({preset!r}).save_to_preset('local_preset')) and pass "
        "--preset /path/to/local_preset"
    )


def default_vit_preprocessor(backbone, keras_hub):
    """ViT's standard [-1, 1] scaling, for ViT presets saved without an image converter."""
    height, width = backbone.image_shape[:2]
    converter = keras_hub.layers.ViTImageConverter(
        image_size=(height, width), scale=1 / 127.5, offset=-1.0
    )
    return keras_hub.models.ViTImageClassifierPreprocessor(image_converter=converter)


# ---- explain


def backbone_family(model):
    return type(preset_graph().backbone_of(model)).__name__


def preset_graph():
    from kerasvit.models import preset_graph as module  # imports keras: only once it is needed

    return module


def explain_method(model):
    """"attention" for ViT and DeiT, "gradcam" for backbones that end in a feature map;
    a one-line ExplainError for the others."""
    family = backbone_family(model)
    if family in ATTENTION_FAMILIES:
        return "attention"
    if len(preset_graph().backbone_of(model).output.shape) == 4:
        return "gradcam"
    from kerasvit.explain.explanations import ExplainError

    raise ExplainError(f"cannot explain a {family.removesuffix('Backbone')} classifier: its "
                       "backbone ends in neither a feature map (Grad-CAM) nor ViT/DeiT "
                       "attention; explain works for convolutional, ViT and DeiT presets")


def gradcam_layer(model):
    """The backbone's output, the last feature map before the head's pooling (the model's
    own Resizing and Rescaling layers come before it)."""
    return preset_graph().backbone_of(model).name


def keras_hub_vit_scores(model, images):
    """Runs a keras-hub ViT backbone block by block, asking each block's own attention
    layer for its scores (keras-hub's `ViTEncoderBlock` discards them). `model`: a one-graph
    preset model (or a keras-hub `ViTImageClassifier`).

    Returns (the encoder's output tokens, the list of score tensors). The block is
    recomputed exactly as `ViTEncoderBlock.call` does it, so the tokens match the
    backbone's output; tests check this.
    """
    pixels_of, backbone, _ = preset_graph().preset_parts(model)
    tokens = backbone.get_layer("vit_patching_and_embedding")(pixels_of(images))
    encoder = backbone.get_layer("vit_encoder")
    scores = []
    for block in encoder.encoder_layers:
        normed = block.layer_norm_1(tokens)
        attended, block_scores = block.mha(normed, normed, return_attention_scores=True)
        tokens = tokens + block.dropout(attended)
        tokens = tokens + block.mlp(block.layer_norm_2(tokens))
        scores.append(block_scores)
    return encoder.layer_norm(tokens), scores


def attention_scores(model, images):
    """Every encoder block's attention probabilities, as (batch, heads, tokens, tokens) with
    one class token before the patches (DeiT's distillation token is dropped, each row
    renormalised), from the backbone's own blocks."""
    import keras

    family = backbone_family(model)
    if family == "ViTBackbone":
        return keras_hub_vit_scores(model, images)[1]
    if family != "DeiTBackbone":
        explain_method(model)  # raises its one-line error
        raise ValueError(f"{family} has a feature map: use Grad-CAM")
    pixels_of, backbone, _ = preset_graph().preset_parts(model)
    tokens = backbone.get_layer("deit_patching_and_embedding")(pixels_of(images))
    scores = []
    for block in backbone.get_layer("deit_encoder").encoder_layers:
        tokens, block_scores = block(tokens, return_attention_scores=True)
        keep = keras.ops.concatenate([block_scores[..., :1], block_scores[..., 2:]], axis=-1)
        keep = keras.ops.concatenate([keep[:, :, :1], keep[:, :, 2:]], axis=-2)
        scores.append(keep / keras.ops.sum(keep, axis=-1, keepdims=True))
    return scores


SPEC = ModelSpec(
    name="pretrained",
    builder=build_pretrained,
    description="any keras-hub image classifier preset, new 10-class head, full or linear",
    gradcam_layer=gradcam_layer,
    attention_scores=attention_scores,
    method_of=explain_method,
)
