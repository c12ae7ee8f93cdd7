"""A model in either image layout: the same function of the same NHWC images, switched
layer for layer; saved in channels_last, loaded by kerasvit in the backend's fastest."""

import keras
import numpy as np

from kerasvit import backend_ops
from kerasvit.models import layouts
from kerasvit.models.cnn import build_cnn
from kerasvit.runs import folders, loading


def logits(model, images):
    return keras.ops.convert_to_numpy(model(images, training=False))


def random_weights(model, seed=0):
    """Weights far from the init (which starts every conv near the identity), so that a
    layout mix-up shows in the outputs."""
    rng = np.random.default_rng(seed)
    weights = [rng.normal(size=w.shape).astype("float32") * 0.3 for w in model.weights]
    return [np.abs(w) + 0.5 if "variance" in v.path else w for w, v in zip(weights, model.weights)]


def test_switching_layouts_keeps_the_function_both_ways(cifar_batch, requires_channels_first):
    images = cifar_batch[0][:8]
    last = build_cnn(widths=(8, 8, 8), data_format="channels_last")
    last.set_weights(random_weights(last))
    first = layouts.to_data_format(last, "channels_first")
    assert layouts.data_format_of(last) == "channels_last"
    assert layouts.data_format_of(first) == "channels_first"
    assert first.get_layer("block2_a_conv").data_format == "channels_first"
    assert first.get_layer("block2_a_bn").axis == 1
    assert first.get_layer("features").data_format == "channels_last"  # after layout_out
    np.testing.assert_allclose(logits(first, images), logits(last, images), rtol=1e-4, atol=1e-4)
    back = layouts.to_data_format(first, "channels_last")
    assert layouts.data_format_of(back) == "channels_last"
    np.testing.assert_allclose(logits(back, images), logits(last, images), rtol=1e-4, atol=1e-4)
    assert layouts.to_data_format(last, "channels_last") is last


def test_saved_in_channels_last_and_loaded_in_the_fastest_layout(tmp_path, cifar_batch,
                                                                 requires_channels_first):
    images = cifar_batch[0][:8]
    first = build_cnn(widths=(8, 8, 8), data_format="channels_first")
    first.set_weights(random_weights(first, seed=1))
    folders.save_model(first, tmp_path / "model.keras")
    plain = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    assert layouts.data_format_of(plain) == "channels_last"
    loaded = loading.load_model(tmp_path / "model.keras")
    assert layouts.data_format_of(loaded) == backend_ops.fastest_data_format()
    np.testing.assert_allclose(logits(loaded, images), logits(first, images), rtol=1e-4, atol=1e-4)


def test_models_without_layout_layers_are_left_alone():
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(2, 3)])
    assert layouts.data_format_of(model) is None
    assert layouts.to_data_format(model, "channels_first") is model
