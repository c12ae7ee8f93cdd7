"""tf.data streams fed to `model.fit`/`evaluate` on every backend.

Images leave the pipeline as float32 in [0, 255] at the model's input size, labels as
one-hot float32 (for label smoothing). Normalisation lives inside each model, so a saved
`.keras` file takes raw pixels wherever it is loaded."""

from kerasvit.data import augment, cifar
from kerasvit.data.tensorflow_cpu import tf


def training_stream(images, labels, *, image_size, batch_size, steps, augmentation, seed,
                    epochs, first_epoch=0):
    """The training batches of epochs first_epoch .. epochs-1, `steps` batches each.

    Each epoch's order (a full shuffle, then its first steps * batch_size images) and its
    augmentation depend only on (seed, epoch). A resumed run therefore sees exactly the
    batches of the unbroken run: tf.data's reshuffle_each_iteration counts the iterations
    of the process, so a fresh process would start again at the first epoch's order."""
    if len(images) < batch_size:
        raise cifar.DataError(
            f"batch_size {batch_size} is larger than the {len(images)} training images; "
            "lower --batch-size or use more data")
    per_epoch = steps * batch_size
    transform = {**augment.AUGMENT_FUNCTIONS, **augment.EPOCH_AUGMENT_FUNCTIONS}[augmentation]
    image_size = tuple(int(s) for s in image_size)
    images, labels = tf.constant(images), tf.constant(labels)

    def mirror(index, epoch):
        # airbench's alternating flip: each image has a fixed random parity and is mirrored
        # in every other epoch, so that it is seen both ways in any two epochs.
        parity = tf.random.stateless_uniform([], seed=tf.stack([tf.constant(seed, tf.int64), index]),
                                             alg="philox") < 0.5
        return tf.not_equal(parity, tf.equal(epoch % 2, 1))

    def epoch_elements(epoch):
        epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
        order_seed, augment_seed = tf.unstack(
            tf.random.experimental.stateless_split(epoch_seed, 2, alg="philox"))
        order = tf.random.experimental.stateless_shuffle(
            tf.range(tf.shape(images, out_type=tf.int64)[0]), seed=order_seed, alg="philox")
        image_seeds = tf.random.stateless_uniform(
            [per_epoch, 2], seed=augment_seed, minval=None, maxval=None, dtype=tf.int64,
            alg="philox")
        epochs_column = tf.fill([per_epoch], epoch)
        return tf.data.Dataset.from_tensor_slices((order[:per_epoch], image_seeds, epochs_column))

    def prepare(index, image_seed, epoch):
        image = tf.cast(tf.gather(images, index), tf.float32)
        if augmentation in augment.EPOCH_AUGMENT_FUNCTIONS:
            image = transform(image, image_size, image_seed, mirror(index, epoch))
        else:
            image = transform(image, image_size, image_seed)
        return image, tf.one_hot(tf.gather(labels, index), cifar.NUM_CLASSES)

    dataset = tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch_elements)
    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def evaluation_dataset(images, labels, *, image_size, batch_size, batch_multiple=1):
    """Batches of (float32 images in [0, 255] at `image_size`, one-hot labels), in order,
    for validation, test and prediction. (Training reads `training_stream`.)

    `batch_multiple`: every batch, the last one included, holds a multiple of this many
    images (data-parallel evaluation splits each batch evenly over the devices; see
    kerasvit.distribution); the few images beyond that are left out."""
    if batch_multiple > 1:
        keep = len(images) - (len(images) % batch_size) % batch_multiple
        images, labels = images[:keep], labels[:keep]
    image_size = tuple(int(s) for s in image_size)

    def prepare(image, label):
        return augment.resize(tf.cast(image, tf.float32), image_size), tf.one_hot(label, cifar.NUM_CLASSES)

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def prepare_images(images, image_size):
    """Numpy images (N, H, W, 3) of any size -> float32 [0, 255] at `image_size` (predict)."""
    images = tf.cast(tf.convert_to_tensor(images), tf.float32)
    if tuple(images.shape[1:3]) != tuple(image_size):
        images = tf.image.resize(images, image_size, method="bilinear")
    return images.numpy()
