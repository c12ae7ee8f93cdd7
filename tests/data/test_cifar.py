"""The CIFAR-10 pipeline: deterministic stratified splits, subsets, batches for any model."""

import numpy as np
import pytest

from kerasvit.data import cifar, stream


def test_split_is_stratified_deterministic_and_disjoint():
    labels = np.repeat(np.arange(10), 100)
    train, validation = cifar.split_train_validation(labels, 200)
    again_train, again_validation = cifar.split_train_validation(labels, 200)
    assert np.array_equal(train, again_train) and np.array_equal(validation, again_validation)
    assert len(validation) == 200 and len(train) == 800
    assert not set(train) & set(validation)
    assert np.all(np.bincount(labels[validation]) == 20)


def test_subset_takes_n_per_class_and_refuses_too_many():
    labels = np.repeat(np.arange(10), 5)
    chosen = cifar.take_per_class(np.arange(50), labels, 3)
    assert np.all(np.bincount(labels[chosen]) == 3)
    with pytest.raises(cifar.DataError, match="at most 5"):
        cifar.take_per_class(np.arange(50), labels, 6)


def test_test_subset_takes_the_first_n_test_images_of_each_class():
    labels = np.array([3, 1, 3, 0, 1, 3, 2, 0, 2] + list(range(10)) * 2)
    images = np.arange(len(labels))
    chosen_images, chosen_labels = cifar.test_subset((images, labels), 2)
    assert np.all(np.bincount(chosen_labels) == 2)
    np.testing.assert_array_equal(chosen_images[chosen_labels == 3], [0, 2])  # the first ones
    assert cifar.test_subset((images, labels), 0)[0] is images
    with pytest.raises(cifar.DataError, match="test_per_class 4 is larger than the 2 test images"):
        cifar.test_subset((images, labels), 4)


def test_a_test_subset_larger_than_cifar_is_refused_before_loading():
    from kerasvit.config import TrainConfig

    with pytest.raises(cifar.DataError, match="test_per_class 1001 is larger than the 1000"):
        cifar.check_sizes(TrainConfig(test_per_class=1001))


def test_real_cifar_splits(cifar_splits):
    train_images, train_labels = cifar_splits["train"]
    assert train_images.shape == (200, 32, 32, 3) and train_images.dtype == np.uint8
    assert np.all(np.bincount(train_labels, minlength=10) == 20)
    assert cifar_splits["validation"][0].shape[0] == 500
    assert cifar_splits["test"][0].shape == (10000, 32, 32, 3)
    # The validation images are not among the training images.
    train_set = {image.tobytes() for image in train_images}
    assert not any(image.tobytes() in train_set for image in cifar_splits["validation"][0][:100])


@pytest.mark.parametrize("augmentation, size", [
    ("pad_crop_flip", (32, 32)), ("random_resized_crop_flip", (48, 48)), ("none", (32, 32)),
])
def test_pipeline_yields_float_images_and_one_hot_labels(cifar_splits, augmentation, size):
    images, labels = cifar_splits["train"]
    dataset = stream.training_stream(images, labels, image_size=size, batch_size=50, steps=4,
                                     augmentation=augmentation, seed=0, epochs=1)
    batches = list(dataset.as_numpy_iterator())
    assert len(batches) == 4
    x, y = batches[0]
    assert x.shape == (50, *size, 3) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 255.0 and x.max() > 100
    assert y.shape == (50, 10) and np.all(y.sum(axis=1) == 1)


def test_evaluation_pipeline_keeps_order_and_every_image(cifar_splits):
    images, labels = cifar_splits["validation"]
    dataset = stream.evaluation_dataset(images, labels, image_size=(32, 32), batch_size=64)
    seen = np.concatenate([y.argmax(axis=1) for _, y in dataset.as_numpy_iterator()])
    assert np.array_equal(seen, labels)


def test_batch_larger_than_the_data_is_refused(cifar_splits):
    images, labels = cifar_splits["train"]
    with pytest.raises(cifar.DataError, match="batch_size 512 is larger"):
        stream.training_stream(images, labels, image_size=(32, 32), batch_size=512, steps=1,
                               augmentation="none", seed=0, epochs=1)


def test_missing_data_is_one_clear_error(tmp_path, monkeypatch):
    # A proxy that refuses connections makes the download fail at once, online or not.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    with pytest.raises(cifar.DataError, match="--data-dir DIR or set TFDS_DATA_DIR"):
        cifar.load_cifar10(str(tmp_path / "empty"))


@pytest.mark.parametrize("augmentation, size", [
    ("pad_crop_flip", (32, 32)), ("random_resized_crop_flip", (48, 48)),
])
def test_augmentation_is_reproducible_per_seed_and_new_each_epoch(cifar_splits, augmentation, size):
    images, labels = cifar_splits["train"]

    def two_epochs(seed):
        dataset = stream.training_stream(images, labels, image_size=size, batch_size=50, steps=4,
                                         augmentation=augmentation, seed=seed, epochs=2)
        batches = [x for x, _ in dataset.as_numpy_iterator()]
        return [batches[:4], batches[4:]]

    first, again, other_seed = two_epochs(3), two_epochs(3), two_epochs(4)
    for epoch in range(2):
        assert all(np.array_equal(a, b) for a, b in zip(first[epoch], again[epoch]))
    assert not np.array_equal(first[0][0], first[1][0])
    assert not np.array_equal(first[0][0], other_seed[0][0])
