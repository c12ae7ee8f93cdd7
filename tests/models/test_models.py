"""Each registered model builds, saves/loads as .keras, and learns on real CIFAR-10."""

import keras
import numpy as np
import pytest

from kerasvit.config import TrainConfig
from kerasvit.models import build_model
from kerasvit.models.vit import attention_scores
from kerasvit.training import recipe

# Small but real versions of the scratch models (vit_b16 has its own tests with a tiny preset).
TINY_ARGS = {
    "cnn": {"widths": [32, 64, 128]},
    "vit": {"patch_size": 4, "num_layers": 2, "num_heads": 2, "hidden_dim": 64, "mlp_dim": 128,
            "drop_path_rate": 0.0},
}


def probabilities(model, images):
    return keras.ops.convert_to_numpy(keras.ops.softmax(model.predict(images, verbose=0)))


@pytest.mark.parametrize("name", ["cnn", "vit"])
def test_default_model_builds_with_expected_size(name):
    model = build_model(name)
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, 10)
    assert 1.0e6 < model.count_params() < 2.0e6


@pytest.mark.parametrize("name", ["cnn", "vit"])
def test_saved_model_predicts_the_same_after_loading(tmp_path, name, cifar_batch):
    model = build_model(name, **TINY_ARGS[name])
    images = cifar_batch[0][:8]
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(probabilities(loaded, images), probabilities(model, images), atol=1e-6)


@pytest.mark.parametrize("name, epochs, learning_rate", [("cnn", 10, 3e-3), ("vit", 12, 2e-3)])
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


def test_vit_attention_scores_reuse_the_model_weights(cifar_batch):
    model = build_model("vit", **TINY_ARGS["vit"])
    scores = attention_scores(model, cifar_batch[0][:3])
    assert len(scores) == 2
    first = keras.ops.convert_to_numpy(scores[0])
    assert first.shape == (3, 2, 65, 65)  # 8x8 patches + class token
    np.testing.assert_allclose(first.sum(axis=-1), 1.0, atol=1e-5)
