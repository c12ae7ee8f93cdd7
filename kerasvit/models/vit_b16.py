"""keras-hub's pretrained ViT-B/16 with a new 10-class head, for fine-tuning at 224x224.

`preset` is a keras-hub preset name (downloaded from Kaggle) or a local preset directory
(made with `save_to_preset`). The preset's own image converter (resize + normalisation)
stays attached to the model as its preprocessor, so the model takes raw [0, 255] pixels.
"""

import json
import os
from pathlib import Path

from kerasvit.errors import UserError
from kerasvit.models import ModelSpec

DEFAULT_PRESET = "vit_base_patch16_224_imagenet21k"
FINETUNE_MODES = ("full", "linear")


class PresetError(UserError, RuntimeError):
    """The preset cannot be loaded; the message is shown to the user as one line."""


def build_vit_b16(
    *,
    preset=DEFAULT_PRESET,
    finetune="full",
    num_classes=10,
    dropout_rate=0.0,
):
    """Loads `preset` into a `keras_hub.models.ViTImageClassifier` with a new head.

    finetune="full" trains every weight; "linear" freezes the backbone (a linear probe).
    """
    if finetune not in FINETUNE_MODES:
        raise PresetError(f"finetune must be one of {', '.join(FINETUNE_MODES)}, got {finetune!r}")
    import keras_hub

    check_preset(preset, keras_hub)
    try:
        classifier = keras_hub.models.ViTImageClassifier.from_preset(
            preset, num_classes=num_classes, activation=None, dropout=dropout_rate,
            # float32 logits under --mixed-precision too, as in the cnn and vit: keras-hub's
            # default (the backbone's bf16) breaks TF's top-5 metric ("InTopKV2 ... bfloat16").
            head_dtype="float32",
        )
    except Exception as error:
        raise preset_error(preset, error) from None
    if classifier.preprocessor is None:
        classifier.preprocessor = default_preprocessor(classifier.backbone, keras_hub)
    classifier.backbone.trainable = finetune == "full"
    return classifier


def looks_like_path(preset):
    return os.sep in preset or preset.startswith(".") or os.path.exists(preset)


def check_preset(preset, keras_hub):
    if looks_like_path(preset):
        if not os.path.isdir(preset):
            raise PresetError(
                f"preset directory {preset} does not exist; pass a folder made with "
                "save_to_preset, or a preset name such as " + DEFAULT_PRESET
            )
        if not os.path.isfile(os.path.join(preset, "config.json")):
            raise PresetError(
                f"{preset} is not a keras-hub preset (no config.json); pass a folder made "
                "with save_to_preset"
            )
        return
    known = keras_hub.models.ViTBackbone.presets
    if preset not in known:
        vit_names = ", ".join(sorted(known))
        raise PresetError(f"unknown ViT preset {preset!r}; known presets: {vit_names}, or a local directory")


def preset_error(preset, error):
    reason = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}" if str(error) else type(error).__name__
    if looks_like_path(preset):
        return PresetError(f"could not load the local preset {preset} ({reason}); "
                           "is it a ViT preset saved with save_to_preset?")
    return PresetError(
        f"could not fetch the weights of preset {preset!r} ({reason}). Without internet "
        "access, download the preset elsewhere (e.g. keras_hub.models.ViTImageClassifier"
        f".from_preset({preset!r}).save_to_preset('vit_b16_preset')) and pass "
        "--preset /path/to/vit_b16_preset"
    )


def default_preprocessor(backbone, keras_hub):
    """ViT's standard [-1, 1] scaling, for presets saved without an image converter."""
    height, width = backbone.image_shape[:2]
    converter = keras_hub.layers.ViTImageConverter(
        image_size=(height, width), scale=1 / 127.5, offset=-1.0
    )
    return keras_hub.models.ViTImageClassifierPreprocessor(image_converter=converter)


def keras_hub_vit_scores(classifier, images):
    """Runs a keras-hub `ViTImageClassifier`'s backbone block by block, asking each block's
    own attention layer for its scores (keras-hub's `ViTEncoderBlock` discards them).

    Returns (the encoder's output tokens, the list of score tensors). The block is
    recomputed exactly as `ViTEncoderBlock.call` does it, so the tokens match
    `classifier.backbone(...)`; tests check this.
    """
    pixels = classifier.preprocessor.image_converter(images)  # resize + rescale
    backbone = classifier.backbone
    tokens = backbone.get_layer("vit_patching_and_embedding")(pixels)
    encoder = backbone.get_layer("vit_encoder")
    scores = []
    for block in encoder.encoder_layers:
        normed = block.layer_norm_1(tokens)
        attended, block_scores = block.mha(normed, normed, return_attention_scores=True)
        tokens = tokens + block.dropout(attended)
        tokens = tokens + block.mlp(block.layer_norm_2(tokens))
        scores.append(block_scores)
    return encoder.layer_norm(tokens), scores


def attention_scores(classifier, images):
    """Every encoder block's attention probabilities (see `keras_hub_vit_scores`)."""
    return keras_hub_vit_scores(classifier, images)[1]


def check_preset_folder(preset):
    """A local preset folder must exist, be readable and hold a ViT: checked before keras
    is imported. Preset names are left to keras-hub."""
    if not isinstance(preset, str) or not looks_like_path(preset):
        return
    path = Path(preset).expanduser()
    if not path.exists():
        raise PresetError(
            f"preset folder {preset} does not exist; pass a folder made with save_to_preset, "
            f"or a preset name such as {DEFAULT_PRESET}")
    if not path.is_dir():
        raise PresetError(f"preset {preset} is a file; pass the folder that "
                                  "save_to_preset wrote")
    try:
        backbone = json.loads((path / "config.json").read_text())
    except FileNotFoundError:
        raise PresetError(f"{preset} is not a keras-hub preset (no config.json); pass "
                                  "a folder made with save_to_preset") from None
    except PermissionError:
        raise PresetError(f"preset folder {preset} is not readable (permission "
                                  "denied); fix its permissions or pass another --preset") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PresetError(f"cannot read {path / 'config.json'} ({type(error).__name__}); "
                                  "the preset is damaged, save it again") from None
    name = backbone.get("registered_name", "") if isinstance(backbone, dict) else ""
    if name != "keras_hub>ViTBackbone":
        found = name.split(">")[-1] or "no keras-hub"
        raise PresetError(
            f"preset {preset} holds a {found} model, not a ViT; --model vit_b16 needs a ViT "
            f"preset, e.g. one saved from {DEFAULT_PRESET}")


SPEC = ModelSpec(
    name="vit_b16",
    builder=build_vit_b16,
    description="keras-hub ViT-B/16 fine-tuned at 224x224, ~86M params",
    attention_scores=attention_scores,
)
