"""CIFAR-10 from tensorflow-datasets, fed to `model.fit` on every backend through tf.data.

Images leave the pipeline as float32 in [0, 255] at the model's input size, labels as
one-hot float32 (for label smoothing). Normalisation lives inside each model, so a saved
`.keras` file takes raw pixels wherever it is loaded.
"""

import functools
import os

import numpy as np
import tensorflow as tf

from kerasvit.errors import UserError

NUM_CLASSES = 10
SPLIT_SEED = 0  # The train/validation split never changes with the training seed.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"  # tfds' source

# Keep TensorFlow off any GPU: it is only the input pipeline, and must not take
# accelerator memory that JAX or torch need.
try:
    tf.config.set_visible_devices([], "GPU")
except RuntimeError:
    pass  # Already initialised (e.g. by kerasvit.cli.import_tensorflow_quietly).


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


def take_per_class(indices, labels, per_class):
    """The first `per_class` indices of each class, in their original order."""
    counts = np.bincount(labels[indices], minlength=NUM_CLASSES)
    if per_class > counts.min():
        raise DataError(
            f"subset_per_class {per_class} is larger than the {counts.min()} training "
            f"images per class available; use at most {counts.min()}"
        )
    chosen = [indices[labels[indices] == c][:per_class] for c in range(NUM_CLASSES)]
    return np.sort(np.concatenate(chosen))


def load_splits(data_dir="", validation_size=5000, subset_per_class=0):
    """Returns {"train", "validation", "test"}: (uint8 images, int64 labels) each."""
    cifar = load_cifar10(resolve_data_dir(data_dir))
    images, labels = cifar["train"]
    train_idx, val_idx = split_train_validation(labels, validation_size)
    if subset_per_class:
        train_idx = take_per_class(train_idx, labels, subset_per_class)
    return {
        "train": (images[train_idx], labels[train_idx]),
        "validation": (images[val_idx], labels[val_idx]),
        "test": cifar["test"],
    }


# Augmentations use stateless random ops with a seed per image drawn from a seeded stream:
# stateful ops inside a parallel map give different crops on every run of the same seed.

def pad_crop_flip(image, image_size, seed):
    """Random 4-pixel translation (reflect padding) and horizontal flip."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]], mode="REFLECT")
    image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_seed)
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return resize(image, image_size)


def random_resized_crop_flip(image, image_size, seed):
    """Inception-style crop (8%-100% of the area is too harsh at 32 px; 25%-100% here)."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.zeros([1, 0, 4]),
        seed=crop_seed,
        area_range=(0.25, 1.0),
        aspect_ratio_range=(3 / 4, 4 / 3),
        min_object_covered=0.0,
        use_image_if_no_bounding_boxes=True,
    )
    image = tf.slice(image, begin, size)
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return tf.image.resize(image, image_size, method="bilinear")


def resize(image, image_size, seed=None):
    if tuple(image.shape[:2]) == tuple(image_size):
        return image
    return tf.image.resize(image, image_size, method="bilinear")


AUGMENT_FUNCTIONS = {
    "none": resize,
    "pad_crop_flip": pad_crop_flip,
    "random_resized_crop_flip": random_resized_crop_flip,
}


def translate_alternating_flip(image, image_size, seed, mirror):
    """airbench's augmentation: a random translation by up to 2 pixels (reflect padding),
    and a flip decided by the caller (`mirror`: alternating epoch by epoch, see
    kerasvit.training.training_stream) rather than at random."""
    padded = tf.pad(image, [[2, 2], [2, 2], [0, 0]], mode="REFLECT")
    image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=seed)
    image = tf.where(mirror, tf.image.flip_left_right(image), image)
    return resize(image, image_size)


# Augmentations that also take the epoch's mirror decision for the image.
EPOCH_AUGMENT_FUNCTIONS = {"translate_alternating_flip": translate_alternating_flip}


def with_random_mirror(transform):
    def transform_with_mirror(image, image_size, seed):
        own_seed, mirror_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        mirror = tf.random.stateless_uniform([], seed=mirror_seed) < 0.5
        return transform(image, image_size, own_seed, mirror)

    return transform_with_mirror


def make_dataset(images, labels, *, image_size, batch_size, training,
                 augmentation="none", seed=0, batch_multiple=1):
    """tf.data pipeline of (float32 images in [0, 255], one-hot labels) batches.

    `batch_multiple`: every batch, the last one included, holds a multiple of this many
    images (data-parallel evaluation splits each batch evenly over the devices; see
    kerasvit.distribution). The few images beyond that are left out; training batches are
    always full anyway."""
    if training and len(images) < batch_size:
        raise DataError(
            f"batch_size {batch_size} is larger than the {len(images)} training images; "
            "lower --batch-size or use more data"
        )
    if not training and batch_multiple > 1:
        keep = len(images) - (len(images) % batch_size) % batch_multiple
        images, labels = images[:keep], labels[:keep]
    image_size = tuple(int(s) for s in image_size)
    transform = AUGMENT_FUNCTIONS.get(augmentation if training else "none")
    if transform is None:  # an epoch-aware augmentation: here, one epoch of random mirrors
        transform = with_random_mirror(EPOCH_AUGMENT_FUNCTIONS[augmentation])

    def prepare(example, image_seed):
        image, label = example
        image = transform(tf.cast(image, tf.float32), image_size, image_seed)
        return image, tf.one_hot(label, NUM_CLASSES)

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if training:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    # One [2]-int seed per image; a new (deterministic) stream each epoch.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    dataset = tf.data.Dataset.zip((dataset, seeds))
    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=training)
    return dataset.prefetch(tf.data.AUTOTUNE)


def prepare_images(images, image_size):
    """Numpy images (N, H, W, 3) of any size -> float32 [0, 255] at `image_size` (predict)."""
    images = tf.cast(tf.convert_to_tensor(images), tf.float32)
    if tuple(images.shape[1:3]) != tuple(image_size):
        images = tf.image.resize(images, image_size, method="bilinear")
    return images.numpy()
