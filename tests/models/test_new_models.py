"""resnet18 and mobilenet: CIFAR shapes and sizes, learning on real CIFAR-10, `.keras` round
trip and Grad-CAM, on whichever backend KERAS_BACKEND names (as tests/models/test_models.py does
for cnn and vit)."""

import keras
import numpy as np
import pytest

from kerasvit.config import TrainConfig
from kerasvit.explain.explanations import explain_batch
from kerasvit.models import build_model
from kerasvit.models.cnn import last_conv_layer_name
from kerasvit.training import recipe

NEW_MODELS = ("resnet18", "mobilenet")
# Tiny widths and one block per stage, strides chosen so the last feature map is 4x4 as in
# the defaults.
TINY_ARGS = {
    "resnet18": {"input_conv_filters": 16, "stackwise_num_filters": [16, 32, 64, 128],
                 "stackwise_num_blocks": [1, 1, 1, 1]},
    "mobilenet": {"input_num_filters": 8, "stackwise_expansion": [1, 4, 4, 4],
                  "stackwise_num_filters": [8, 16, 24, 32], "stackwise_num_blocks": [1, 1, 1, 1],
                  "stackwise_num_strides": [1, 2, 2, 2], "last_layer_filter": 64,
                  "dropout_rate": 0.0},
}
# Default size and the Grad-CAM feature map: CIFAR strides keep a 4x4 map at the end.
EXPECTED = {
    "resnet18": {"params": (11.1e6, 11.3e6), "feature_map": (None, 4, 4, 512)},
    "mobilenet": {"params": (2.1e6, 2.4e6), "feature_map": (None, 4, 4, 1280)},
}


def probabilities(model, images):
    return keras.ops.convert_to_numpy(keras.ops.softmax(model.predict(images, verbose=0)))


@pytest.mark.parametrize("name", NEW_MODELS)
def test_default_model_has_cifar_shapes_and_expected_size(name, backend):
    if backend == "jax":
        # The graph is the same on every backend, and JAX on CPU compiles each initializer
        # separately: ~30 s per full-size build here. The tiny builds below run on JAX too.
        pytest.skip("full-size build checked on tensorflow and torch")
    model = build_model(name)
    assert model.name == name  # loading.model_name falls back to it for lone .keras files
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, 10)
    low, high = EXPECTED[name]["params"]
    assert low < model.count_params() < high
    feature_map = model.get_layer(last_conv_layer_name(model)).output.shape
    assert tuple(feature_map) == EXPECTED[name]["feature_map"]


@pytest.mark.parametrize("name", NEW_MODELS)
def test_mismatched_stage_lists_are_refused(name):
    with pytest.raises(ValueError, match="one entry per stage"):
        build_model(name, stackwise_num_blocks=[1, 1])


@pytest.mark.parametrize("name", NEW_MODELS)
def test_saved_model_predicts_the_same_after_loading(tmp_path, name, cifar_batch):
    model = build_model(name, **TINY_ARGS[name])
    images = cifar_batch[0][:8]
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(probabilities(loaded, images), probabilities(model, images), atol=1e-6)


@pytest.mark.parametrize("name, epochs, learning_rate", [("resnet18", 6, 5e-3), ("mobilenet", 6, 1e-2)])
def test_model_learns_on_real_cifar(name, epochs, learning_rate, cifar_batch, backend):
    keras.utils.set_random_seed(0)
    images, labels = cifar_batch
    one_hot = keras.utils.to_categorical(labels, 10)
    model = build_model(name, **TINY_ARGS[name])
    config = TrainConfig(model=name, epochs=epochs, batch_size=50, learning_rate=learning_rate,
                         warmup_epochs=0.5, label_smoothing=0.0, weight_decay=0.01)
    recipe.compile_model(model, config, steps_per_epoch=len(images) // 50, backend=backend)
    before = model.evaluate(images, one_hot, batch_size=100, verbose=0, return_dict=True)
    model.fit(images, one_hot, batch_size=50, epochs=epochs, verbose=0)
    after = model.evaluate(images, one_hot, batch_size=100, verbose=0, return_dict=True)
    assert after["loss"] < 0.8 * before["loss"]
    assert after["accuracy"] > 0.3  # chance is 0.1


@pytest.mark.parametrize("name", NEW_MODELS)
def test_grad_cam_explains_the_new_models(name, cifar_batch):
    model = build_model(name, **TINY_ARGS[name])
    result = explain_batch(model, name, cifar_batch[0][:3])
    assert result["method"] == "gradcam"
    assert result["gradcam"].shape == (3, 4, 4)
    assert np.all(np.isfinite(result["gradcam"])) and np.all(result["gradcam"] >= 0)
