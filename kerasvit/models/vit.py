"""A Vision Transformer for 32x32 images, from Keras layers (Dosovitskiy et al., 2020).

image -> normalise -> patch tokens -> [class token; tokens] + positions -> pre-norm blocks
-> final LayerNorm -> class token ("features") -> Dense head (logits).

The patch tokens come from a convolutional stem (`stem="conv"`, the default: overlapping
3x3 convolutions down to the same 8x8 grid) or from the original linear patch projection
(`stem="patch"`); docs/results.md compares the two.
"""

import keras

from kerasvit.models import ModelSpec
from kerasvit.models.cnn import CIFAR_MEAN, CIFAR_VARIANCE
from kerasvit.models.vit_layers import (
    ClassTokenAndPositions,
    ClassTokenSelect,
    ConvPatchEmbedding,
    PatchEmbedding,
    TransformerBlock,
)

STEMS = ("conv", "patch")


def build_vit(
    *,
    image_shape=(32, 32, 3),
    num_classes=10,
    patch_size=4,
    stem="conv",
    stem_widths=(64, 128),
    num_layers=6,
    num_heads=4,
    hidden_dim=192,
    mlp_dim=384,
    dropout_rate=0.0,
    attention_dropout=0.0,
    drop_path_rate=0.1,
    layer_norm_epsilon=1e-6,
):
    """Builds the scratch ViT. `drop_path_rate` grows linearly to this value with depth;
    `stem_widths` are the conv stem's widths before its projection (stem="conv" only)."""
    image_shape = tuple(image_shape)
    if image_shape[0] % patch_size or image_shape[1] % patch_size:
        raise ValueError(f"image_shape {image_shape} is not divisible by patch_size {patch_size}")
    if hidden_dim % num_heads:
        raise ValueError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
    if stem not in STEMS:
        raise ValueError(f"stem {stem!r} is not one of {', '.join(STEMS)}")

    inputs = keras.Input(shape=image_shape, name="images")
    x = keras.layers.Normalization(mean=CIFAR_MEAN, variance=CIFAR_VARIANCE,
                                   name="normalize")(inputs)
    if stem == "conv":
        embedding = ConvPatchEmbedding(patch_size=patch_size, hidden_dim=hidden_dim,
                                       stem_widths=list(stem_widths), name="patch_embedding")
    else:
        embedding = PatchEmbedding(patch_size=patch_size, hidden_dim=hidden_dim,
                                   name="patch_embedding")
    x = embedding(x)
    x = ClassTokenAndPositions(name="class_token_and_positions")(x)
    x = keras.layers.Dropout(dropout_rate, name="embedding_dropout")(x)
    for index in range(num_layers):
        x = TransformerBlock(
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            mlp_dim=mlp_dim,
            dropout_rate=dropout_rate,
            attention_dropout=attention_dropout,
            drop_path_rate=drop_path_rate * index / max(num_layers - 1, 1),
            layer_norm_epsilon=layer_norm_epsilon,
            name=f"block_{index}",
        )(x)
    x = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="final_norm")(x)
    features = ClassTokenSelect(name="features")(x)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="head")(features)
    return keras.Model(inputs, outputs, name="vit")


def encoder_blocks(model):
    """The model's TransformerBlocks in order (scratch ViT)."""
    return [layer for layer in model.layers if isinstance(layer, TransformerBlock)]


def attention_scores(model, images):
    """Runs `images` (float, [0, 255]) through a scratch ViT and returns every block's
    attention probabilities: a list of (batch, heads, tokens, tokens) arrays.

    Reuses the model's own layers and weights, so it cannot drift from the trained model.
    """
    x = model.get_layer("normalize")(keras.ops.convert_to_tensor(images, "float32"))
    x = model.get_layer("patch_embedding")(x)
    x = model.get_layer("class_token_and_positions")(x)
    scores = []
    for block in encoder_blocks(model):
        x, block_scores = block(x, return_attention_scores=True)
        scores.append(block_scores)
    return scores


SPEC = ModelSpec(
    name="vit",
    builder=build_vit,
    description="ViT from Keras layers for 32x32 (conv stem to 8x8 tokens), ~1.9M params",
    tiny_args={"patch_size": 4, "stem_widths": [16, 32], "num_layers": 2, "num_heads": 2, "hidden_dim": 64,
               "mlp_dim": 128, "drop_path_rate": 0.0},
    attention_scores=attention_scores,
)
