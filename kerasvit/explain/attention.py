"""ViT attention maps: where the class token looks, per layer and across layers.

Scores come from the models' own layers and weights (nothing is copied), the maps are
plain numpy math on them, so they are the same on every backend:

- per-layer map: the class token's attention to each patch, averaged over heads;
- rollout (Abnar & Zuidema, 2020): the attention matrices of all layers multiplied in
  order, each first mixed half-and-half with the identity (the residual connection carries
  each token on unchanged) and renormalised so every row sums to 1.
"""

import keras
import numpy as np


def attention_scores(model, model_name, images):
    """Every encoder layer's attention probabilities for `images` (float, [0, 255], at the
    model's input size): a list of numpy arrays (batch, heads, tokens, tokens). Where they
    come from is the model's business (its registry entry's `attention_scores`)."""
    from kerasvit.models import get_spec

    scores = get_spec(model_name).attention_scores(model, images)
    return [keras.ops.convert_to_numpy(s).astype("float32") for s in scores]


def class_token_maps(scores, grid_shape):
    """Per-layer class-token attention to the patches, averaged over heads:
    (batch, layers, grid_height, grid_width). Each map sums to at most 1 (the rest of
    the class token's attention goes to itself)."""
    maps = [layer_scores.mean(axis=1)[:, 0, 1:] for layer_scores in scores]
    maps = np.stack(maps, axis=1)
    return maps.reshape(maps.shape[:2] + tuple(grid_shape))


def rollout(scores):
    """Attention rollout: (batch, tokens, tokens), rows summing to 1; row 0 is how much
    the final class token draws on each input token through all layers."""
    batch, _, tokens, _ = scores[0].shape
    identity = np.eye(tokens, dtype="float64")
    result = np.broadcast_to(identity, (batch, tokens, tokens))
    for layer_scores in scores:
        mixed = 0.5 * layer_scores.mean(axis=1).astype("float64") + 0.5 * identity
        mixed /= mixed.sum(axis=-1, keepdims=True)
        result = mixed @ result
    return result.astype("float32")


def rollout_maps(scores, grid_shape):
    """The class token's rollout over the patches: (batch, grid_height, grid_width)."""
    class_row = rollout(scores)[:, 0, 1:]
    return class_row.reshape((class_row.shape[0],) + tuple(grid_shape))


def patch_grid_shape(scores, image_shape):
    """(rows, columns) of the patch grid, from the token count and the image's aspect."""
    num_patches = scores[0].shape[-1] - 1
    height, width = image_shape[:2]
    rows = int(round((num_patches * height / width) ** 0.5))
    if rows == 0 or num_patches % rows:
        raise ValueError(f"{num_patches} patches do not form a grid for a {height}x{width} image")
    return rows, num_patches // rows
