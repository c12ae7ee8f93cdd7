"""TensorBoard event files of a training run hold the accuracy, F1 and learning-rate scalars
(on every backend) and the confusion-matrix image written at the end of training. (Under a
multi-process keras.distribution it is checked by test_distribution.py.)"""

import csv
import io
import warnings

import numpy as np
import pytest
from PIL import Image
from trained_run import tiny_vit_run

from kerasvit.training import tensorboard_images


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return tiny_vit_run(tmp_path_factory.getbasetemp())


def load_events(folder):
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(
        str(folder), size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    return accumulator


def scalar(accumulator, tag):
    import tensorflow as tf

    return [float(tf.make_ndarray(event.tensor_proto)) for event in accumulator.Tensors(tag)]


def test_scalars_for_train_and_validation(tiny_run):
    with open(tiny_run / "history.csv") as f:
        history = list(csv.DictReader(f))
    train = load_events(tiny_run / "tensorboard" / "train")
    tags = train.Tags()["tensors"]
    for tag in ("epoch_accuracy", "epoch_f1", "epoch_learning_rate", "epoch_loss"):
        assert tag in tags, tags
    # The values are the epoch's logs, the same ones CSVLogger wrote.
    assert scalar(train, "epoch_f1") == pytest.approx([float(r["f1"]) for r in history], rel=1e-5)
    assert scalar(train, "epoch_accuracy") == pytest.approx(
        [float(r["accuracy"]) for r in history], rel=1e-5)
    validation = load_events(tiny_run / "tensorboard" / "validation")
    for tag in ("epoch_accuracy", "epoch_f1", "epoch_loss"):
        assert tag in validation.Tags()["tensors"], validation.Tags()
    assert scalar(validation, "epoch_f1") == pytest.approx(
        [float(r["val_f1"]) for r in history], rel=1e-5)


def test_confusion_matrix_image(tiny_run):
    import tensorflow as tf

    validation = load_events(tiny_run / "tensorboard" / "validation")
    assert "confusion_matrix" in validation.Tags()["tensors"]
    (event,) = validation.Tensors("confusion_matrix")
    width, height, png = tf.make_ndarray(event.tensor_proto)
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        assert image.size == (int(width), int(height))
        assert image.width >= 400 and image.height >= 400
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10  # Drawn, not blank.


def test_image_budget_scales_with_input_area():
    assert tensorboard_images.image_budget((32, 32)) == 2000
    assert tensorboard_images.image_budget((64, 64)) == 500
    assert tensorboard_images.image_budget((224, 224)) == tensorboard_images.MIN_IMAGES


def test_only_process_0_writes_the_image(tmp_path, monkeypatch):
    monkeypatch.setattr(tensorboard_images, "is_first_process", lambda: False)
    callback = tensorboard_images.ConfusionMatrixImage(
        tmp_path, np.zeros((4, 32, 32, 3), np.uint8), np.arange(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # It must not even try (no model is set).
        callback.on_train_end()
    assert not list(tmp_path.iterdir())


def test_prediction_on_one_local_device_matches_predict(backend):
    """The path used under keras.distribution: the weights' local copy, one jitted
    stateless_call per batch, the last batch short."""
    if backend != "jax":
        pytest.skip("the one-device path is for keras.distribution, which runs on JAX only")
    import keras

    from kerasvit import models

    keras.utils.set_random_seed(0)
    model = models.build_model("cnn", widths=[8, 16, 32])
    images = np.random.default_rng(0).uniform(0, 255, (20, 32, 32, 3)).astype("float32")
    expected = model.predict(images, batch_size=8, verbose=0)
    logits = tensorboard_images.predict_on_local_device(model, images, batch_size=8)
    assert logits.shape == (20, 10)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
