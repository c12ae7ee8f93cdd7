"""CIFAR-10 from tensorflow-datasets: loading (offline from a TFDS folder, or the
real download), the stratified train/validation split and per-class subsets."""

import functools
import math
import os

import numpy as np

from kerasvit.errors import UserError

NUM_CLASSES = 10
# CIFAR-10's sizes, to refuse impossible requests in a second, before the data are loaded.
CIFAR10_TRAIN_PER_CLASS = 5000
CIFAR10_TEST_IMAGES = 10_000
SPLIT_SEED = 0  # The train/validation split never changes with the training seed.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"  # tfds' source


class DataError(UserError, RuntimeError):
    """The data cannot be loaded or split as asked; the message is shown as one line."""


def resolve_data_dir(data_dir=""):
    return data_dir or os.environ.get("TFDS_DATA_DIR") or None


@functools.lru_cache(maxsize=2)
def load_cifar10(data_dir=None):
    """Returns {"train": (images, labels), "test": (images, labels)} as numpy uint8/int64."""
    import tensorflow_datasets as tfds

    builder = tfds.builder("cifar10", data_dir=data_dir)
    if not builder.is_prepared():
        download(builder, data_dir)
    splits = {}
    for split in ("train", "test"):
        dataset = builder.as_dataset(split=split, batch_size=-1, as_supervised=True)
        images, labels = tfds.as_numpy(dataset)
        splits[split] = (images, labels.astype(np.int64))
    return splits


def load_test_images(data_dir=None, limit=0):
    """The first `limit` test images (all when 0) as (uint8 images, int64 labels), read
    without the training split: ~0.3 s for 1,000 where load_cifar10 takes ~10 s."""
    import tensorflow_datasets as tfds

    builder = tfds.builder("cifar10", data_dir=data_dir)
    if not builder.is_prepared():
        download(builder, data_dir)
    split = f"test[:{limit}]" if limit else "test"
    dataset = builder.as_dataset(split=split, batch_size=-1, as_supervised=True)
    images, labels = tfds.as_numpy(dataset)
    return images, labels.astype(np.int64)


def download(builder, data_dir):
    where = data_dir or "TFDS's default folder (~/tensorflow_datasets)"
    # Offline, tfds retries for minutes before it gives up: probe the host first.
    reason = unreachable_reason(CIFAR10_URL)
    if reason is None:
        try:
            builder.download_and_prepare()
            return
        except Exception as error:  # tfds raises many types; all mean "no data here".
            reason = type(error).__name__
    raise DataError(
        f"CIFAR-10 is not in {where} and could not be downloaded ({reason}); pass "
        "--data-dir DIR or set TFDS_DATA_DIR to a folder that holds cifar10/3.0.2"
    )


def unreachable_reason(url, timeout_s=10):
    """None if `url` answers (proxies honoured, like tfds), else a short reason."""
    import urllib.error
    import urllib.request

    try:
        # A fresh opener reads the proxy settings now; urlopen's global one keeps its first.
        opener = urllib.request.build_opener()
        opener.open(urllib.request.Request(url, method="HEAD"), timeout=timeout_s)
        return None
    except urllib.error.HTTPError:
        return None  # The host answered; let tfds do the real download.
    except (urllib.error.URLError, OSError) as error:
        return f"no connection to {url.split('/')[2]}: {getattr(error, 'reason', error)}"


def split_train_validation(labels, validation_size):
    """Stratified, seed-fixed split of the training indices into (train, validation)."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    if validation_size == 0:
        return indices, indices[:0]
    if validation_size >= len(labels):
        raise DataError(
            f"validation_size {validation_size} leaves no training images "
            f"(the train split has {len(labels)}); use a smaller --set validation_size"
        )
    train, validation = train_test_split(
        indices, test_size=validation_size, stratify=labels, random_state=SPLIT_SEED
    )
    return np.sort(train), np.sort(validation)


def take_per_class(indices, labels, per_class, setting="subset_per_class", split="training"):
    """The first `per_class` indices of each class, in their original order."""
    counts = np.bincount(labels[indices], minlength=NUM_CLASSES)
    if per_class > counts.min():
        raise DataError(
            f"{setting} {per_class} is larger than the {counts.min()} {split} "
            f"images per class available; use at most {counts.min()}"
        )
    chosen = [indices[labels[indices] == c][:per_class] for c in range(NUM_CLASSES)]
    return np.sort(np.concatenate(chosen))


def test_subset(test, per_class):
    """The first `per_class` test images of each class (all for 0), in their original order."""
    if not per_class:
        return test
    images, labels = test
    chosen = take_per_class(np.arange(len(labels)), labels, per_class, "test_per_class", "test")
    return images[chosen], labels[chosen]


def load_splits(data_dir="", validation_size=5000, subset_per_class=0, test_per_class=0):
    """Returns {"train", "validation", "test"}: (uint8 images, int64 labels) each."""
    cifar = load_cifar10(resolve_data_dir(data_dir))
    images, labels = cifar["train"]
    train_idx, val_idx = split_train_validation(labels, validation_size)
    if subset_per_class:
        train_idx = take_per_class(train_idx, labels, subset_per_class)
    return {
        "train": (images[train_idx], labels[train_idx]),
        "validation": (images[val_idx], labels[val_idx]),
        "test": test_subset(cifar["test"], test_per_class),
    }


def check_sizes(config):
    """Subset, batch and split sizes that CIFAR-10 cannot satisfy. The data loader checks
    the exact per-class counts again; this catches the impossible cases in a second."""
    test_per_class = CIFAR10_TEST_IMAGES // NUM_CLASSES
    if config.test_per_class > test_per_class:
        raise DataError(f"test_per_class {config.test_per_class} is larger than the "
                        f"{test_per_class} CIFAR-10 test images per class; use at most "
                        f"{test_per_class} (0 means all)")
    if config.test_images > CIFAR10_TEST_IMAGES:
        raise DataError(f"test_images {config.test_images} is larger than the "
                          f"{CIFAR10_TEST_IMAGES} CIFAR-10 test images; use at most "
                          f"{CIFAR10_TEST_IMAGES} (0 means all)")
    train_total = CIFAR10_TRAIN_PER_CLASS * NUM_CLASSES
    if config.validation_size >= train_total:
        raise DataError(f"validation_size {config.validation_size} leaves no training images "
                          f"(CIFAR-10 has {train_total}); use a smaller --set validation_size")
    # A stratified split takes validation_size / 10 images of each class, rounded up at most.
    per_class = CIFAR10_TRAIN_PER_CLASS - math.ceil(config.validation_size / NUM_CLASSES)
    if config.subset_per_class > per_class:
        raise DataError(f"subset_per_class {config.subset_per_class} is larger than the "
                          f"{per_class} training images per class available; use at most "
                          f"{per_class}")
    train_images = config.subset_per_class * NUM_CLASSES or train_total - config.validation_size
    if config.batch_size > train_images:
        raise DataError(f"batch_size {config.batch_size} is larger than the {train_images} "
                          "training images; lower --batch-size or use more data")
