"""Every custom layer returns exactly its init arguments from get_config and survives a
.keras save/load with identical outputs."""

import keras
import numpy as np
import pytest

from kerasvit.models.cnn_layers import PatchWhitening
from kerasvit.models.vit_layers import (
    ClassTokenAndPositions,
    ClassTokenSelect,
    ConvPatchEmbedding,
    PatchEmbedding,
    TransformerBlock,
)

LAYER_CASES = [
    (PatchWhitening, {"kernel_size": 3, "epsilon": 1e-3, "data_format": "channels_last"},
     (2, 8, 8, 3)),
    (PatchWhitening, {"kernel_size": 2, "epsilon": 1e-3, "data_format": "channels_first"},
     (2, 3, 8, 8)),
    (PatchEmbedding, {"patch_size": 4, "hidden_dim": 8}, (2, 16, 16, 3)),
    (ConvPatchEmbedding, {"patch_size": 4, "hidden_dim": 8, "stem_widths": [4, 6]},
     (2, 16, 16, 3)),
    (ClassTokenAndPositions, {"initializer_stddev": 0.5}, (2, 5, 8)),
    (ClassTokenSelect, {}, (2, 5, 8)),
    (TransformerBlock, {"num_heads": 2, "hidden_dim": 8, "mlp_dim": 16, "dropout_rate": 0.1,
                        "attention_dropout": 0.1, "drop_path_rate": 0.2,
                        "layer_norm_epsilon": 1e-5}, (2, 5, 8)),
]
CASE_IDS = ["-".join([cls.__name__] + ([kwargs["data_format"]] if "data_format" in kwargs else []))
            for cls, kwargs, _ in LAYER_CASES]
BASE_KEYS = set(keras.layers.Layer(name="x").get_config())


@pytest.mark.parametrize("layer_class, kwargs, input_shape", LAYER_CASES,
                         ids=CASE_IDS)
def test_get_config_returns_exactly_the_init_arguments(layer_class, kwargs, input_shape):
    layer = layer_class(**kwargs)
    config = layer.get_config()
    own = {key: value for key, value in config.items() if key not in BASE_KEYS}
    assert own == kwargs
    clone = layer_class.from_config(config)
    assert clone.get_config() == config


@pytest.mark.parametrize("layer_class, kwargs, input_shape", LAYER_CASES,
                         ids=CASE_IDS)
def test_keras_file_round_trip_gives_the_same_outputs(tmp_path, request, layer_class, kwargs,
                                                      input_shape):
    if kwargs.get("data_format") == "channels_first":
        request.getfixturevalue("requires_channels_first")
    inputs = keras.Input(shape=input_shape[1:])
    model = keras.Model(inputs, layer_class(**kwargs)(inputs))
    x = np.random.default_rng(0).normal(size=input_shape).astype("float32")
    path = tmp_path / "layer.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6
    )


def test_transformer_block_returns_attention_probabilities():
    block = TransformerBlock(num_heads=2, hidden_dim=8, mlp_dim=16)
    x = np.random.default_rng(0).normal(size=(3, 5, 8)).astype("float32")
    out, scores = block(x, return_attention_scores=True)
    scores = keras.ops.convert_to_numpy(scores)
    assert tuple(out.shape) == (3, 5, 8) and scores.shape == (3, 2, 5, 5)
    np.testing.assert_allclose(scores.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x)),
                               keras.ops.convert_to_numpy(out), atol=1e-6)


def test_stochastic_depth_is_active_only_in_training():
    block = TransformerBlock(num_heads=2, hidden_dim=8, mlp_dim=16, drop_path_rate=0.9)
    x = np.random.default_rng(0).normal(size=(64, 5, 8)).astype("float32")
    inference = keras.ops.convert_to_numpy(block(x, training=False))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x, training=False)), inference)
    trained = keras.ops.convert_to_numpy(block(x, training=True))
    # With rate 0.9 most samples skip both residual branches and come out unchanged.
    unchanged = np.all(np.isclose(trained, x, atol=1e-6), axis=(1, 2))
    assert 0.5 < unchanged.mean() < 1.0


@pytest.mark.parametrize("patch_size, stem_widths, grid", [(4, [4, 6], 64), (2, [4], 256),
                                                           (8, [4, 6], 16)])
def test_conv_stem_makes_the_same_token_grid_as_the_patch_projection(patch_size, stem_widths,
                                                                      grid):
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    tokens = ConvPatchEmbedding(patch_size=patch_size, hidden_dim=8, stem_widths=stem_widths)(x)
    assert tuple(tokens.shape) == (2, grid, 8)
    assert tuple(PatchEmbedding(patch_size=patch_size, hidden_dim=8)(x).shape) == (2, grid, 8)


def test_conv_stem_refuses_a_patch_size_its_strides_cannot_make():
    with pytest.raises(ValueError, match="power of 2"):
        ConvPatchEmbedding(patch_size=6, hidden_dim=8, stem_widths=[4])
    with pytest.raises(ValueError, match="power of 2"):
        ConvPatchEmbedding(patch_size=16, hidden_dim=8, stem_widths=[4])
