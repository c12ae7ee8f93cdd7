"""Every registered model, built from its registry entry's tiny arguments: `.keras` round
trip, learning on held-out real CIFAR-10, and what explain uses; and each default's size.
(vit_b16 needs a preset: tests/models/test_vit_b16.py builds one.)"""

import keras
import numpy as np
import pytest

from kerasvit.config import TrainConfig
from kerasvit.explain.explanations import explain_batch
from kerasvit.models import MODEL_NAMES, build_model, get_spec
from kerasvit.models.vit import attention_scores
from kerasvit.training import recipe

TINY = [name for name in MODEL_NAMES if get_spec(name).tiny_args is not None]
# Default parameter counts, and the map Grad-CAM explains (CIFAR strides keep it >= 3x3).
DEFAULTS = {
    "cnn": {"params": (1.9e6, 2.0e6), "feature_map": (None, 3, 3, 256)},
    "vit": {"params": (2.0e6, 2.2e6), "feature_map": None},  # 1.8M with stem="patch"
    "resnet18": {"params": (11.1e6, 11.3e6), "feature_map": (None, 4, 4, 512)},
    "mobilenet": {"params": (2.1e6, 2.4e6), "feature_map": (None, 4, 4, 1280)},
    "alexnet": {"params": (14.9e6, 15.2e6), "feature_map": (None, 4, 4, 256)},
}
# AdamW schedules that make each tiny model learn from 200 images in seconds.
TRAINING = {"cnn": (10, 3e-3), "vit": (12, 2e-3), "resnet18": (6, 5e-3), "mobilenet": (6, 1e-2),
            "alexnet": (8, 1e-3)}


# Each tiny model, and the ViT's plain linear patch projection beside its conv stem.
VARIANTS = {name: {} for name in TINY} | {"vit-patch_stem": {"stem": "patch"}}


def tiny(name, **overrides):
    return build_model(name, **{**get_spec(name).tiny_args, **overrides})


def probabilities(model, images):
    return keras.ops.convert_to_numpy(keras.ops.softmax(model.predict(images, verbose=0)))


def test_every_tiny_model_has_a_size_and_a_schedule_here():
    assert set(TINY) == set(DEFAULTS) == set(TRAINING)


@pytest.mark.parametrize("name", TINY)
def test_default_model_has_cifar_shapes_and_expected_size(name, backend):
    if backend == "jax" and name in ("resnet18", "mobilenet"):
        # The graph is the same on every backend, and JAX on CPU compiles each initializer
        # separately: ~30 s per full-size build here. The tiny builds below run on JAX too.
        pytest.skip("full-size build checked on tensorflow and torch")
    model = build_model(name)
    assert model.name == name  # runs.loading.model_name falls back to it for lone .keras files
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, 10)
    low, high = DEFAULTS[name]["params"]
    assert low < model.count_params() < high
    if DEFAULTS[name]["feature_map"]:
        layer = get_spec(name).gradcam_layer(model)
        assert tuple(model.get_layer(layer).output.shape) == DEFAULTS[name]["feature_map"]


@pytest.mark.parametrize("name", ["resnet18", "mobilenet"])
def test_mismatched_stage_lists_are_refused(name):
    with pytest.raises(ValueError, match="one entry per stage"):
        build_model(name, stackwise_num_blocks=[1, 1])


@pytest.mark.parametrize("name", TINY)
def test_saved_model_predicts_the_same_after_loading(tmp_path, name, cifar_batch):
    model = tiny(name)
    images = cifar_batch[0][:8]
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(probabilities(loaded, images), probabilities(model, images), atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_model_learns_on_held_out_real_cifar(variant, cifar_splits, backend):
    """200 training images; 500 validation images it never saw must beat chance clearly
    (0.10; its spread over 500 images is 0.013)."""
    name = variant.split("-")[0]
    keras.utils.set_random_seed(0)
    images, labels = (array.astype("float32") if array.ndim == 4 else array
                      for array in cifar_splits["train"])
    held_out, held_out_labels = cifar_splits["validation"]
    epochs, learning_rate = TRAINING[name]
    model = tiny(name, **VARIANTS[variant])
    config = TrainConfig(model=name, epochs=epochs, batch_size=50, learning_rate=learning_rate,
                         warmup_epochs=0.5, label_smoothing=0.0, weight_decay=0.01)
    recipe.compile_model(model, config, steps_per_epoch=len(images) // 50, backend=backend)
    one_hot = keras.utils.to_categorical(labels, 10)
    before = model.evaluate(images, one_hot, batch_size=100, verbose=0, return_dict=True)
    model.fit(images, one_hot, batch_size=50, epochs=epochs, verbose=0)
    after = model.evaluate(images, one_hot, batch_size=100, verbose=0, return_dict=True)
    assert after["loss"] < 0.8 * before["loss"]
    held_out_accuracy = model.evaluate(
        held_out.astype("float32"), keras.utils.to_categorical(held_out_labels, 10),
        batch_size=100, verbose=0, return_dict=True)["accuracy"]
    assert held_out_accuracy > 0.15, held_out_accuracy


@pytest.mark.parametrize("name", TINY)
def test_explain_gets_what_the_registry_names(name, cifar_batch):
    model = tiny(name)
    result = explain_batch(model, name, cifar_batch[0][:3])
    assert result["method"] == get_spec(name).explain_method
    if result["method"] == "gradcam":
        grid = model.get_layer(get_spec(name).gradcam_layer(model)).output.shape[1:3]
        assert result["gradcam"].shape == (3, *grid)
        assert np.all(np.isfinite(result["gradcam"])) and np.all(result["gradcam"] >= 0)
    else:
        assert result["rollout"].shape == (3, 8, 8)  # patch 4 on 32x32
        assert result["layers"].shape == (3, 2, 8, 8)  # one map per encoder block
        assert np.all(np.isfinite(result["rollout"])) and np.all(result["rollout"] >= 0)


def test_vit_attention_scores_reuse_the_model_weights(cifar_batch):
    model = tiny("vit")
    scores = attention_scores(model, cifar_batch[0][:3])
    assert len(scores) == 2
    first = keras.ops.convert_to_numpy(scores[0])
    assert first.shape == (3, 2, 65, 65)  # 8x8 patches + class token
    np.testing.assert_allclose(first.sum(axis=-1), 1.0, atol=1e-5)
