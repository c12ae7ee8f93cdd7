"""keras-hub's pretrained ViT-B/16 with a new 10-class head, for fine-tuning at 224x224:
the `pretrained` builder (kerasvit.models.pretrained) restricted to ViT presets, with
ViT-B/16 as its default preset.

`preset` is a keras-hub preset name (downloaded from Kaggle) or a local preset directory
(made with `save_to_preset`). The model is one Keras graph from raw [0, 255] pixels of any
size to logits: the preset's image converter (resize + normalisation) becomes its first
layers (kerasvit.models.preset_graph), so they run inside the compiled step.
"""

from kerasvit.models import ModelSpec, pretrained
from kerasvit.models.pretrained import (  # noqa: F401 (used from here)
    FINETUNE_MODES,
    PresetError,
    keras_hub_vit_scores,
)

DEFAULT_PRESET = "vit_base_patch16_224_imagenet21k"
BACKBONE = "ViTBackbone"


def build_vit_b16(
    *,
    preset=DEFAULT_PRESET,
    finetune="full",
    num_classes=10,
    dropout_rate=0.0,
):
    """Loads `preset` into keras-hub's ViT classifier with a new head, as one graph from
    raw pixels to logits.

    finetune="full" trains every weight; "linear" freezes the backbone (a linear probe).
    """
    return pretrained.load_classifier(preset, finetune, num_classes, dropout_rate,
                                      backbone_name=BACKBONE, default_preset=DEFAULT_PRESET,
                                      model_name="vit_b16")


def check_preset_folder(preset):
    """A local preset folder must exist, be readable and hold a ViT: checked before keras
    is imported. Preset names are left to keras-hub."""
    pretrained.check_preset_folder(preset, BACKBONE, DEFAULT_PRESET, "vit_b16")


def attention_scores(classifier, images):
    """Every encoder block's attention probabilities (see `keras_hub_vit_scores`)."""
    return keras_hub_vit_scores(classifier, images)[1]


SPEC = ModelSpec(
    name="vit_b16",
    builder=build_vit_b16,
    description="keras-hub ViT-B/16 fine-tuned at 224x224, ~86M params",
    attention_scores=attention_scores,
)
