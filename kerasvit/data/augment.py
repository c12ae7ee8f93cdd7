"""Per-image augmentations in tf.data: each takes (image, image_size, seed[, mirror])
and returns a float32 image at `image_size`."""

from kerasvit.data.tensorflow_cpu import tf


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
    kerasvit.data.stream.training_stream) rather than at random."""
    padded = tf.pad(image, [[2, 2], [2, 2], [0, 0]], mode="REFLECT")
    image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=seed)
    image = tf.where(mirror, tf.image.flip_left_right(image), image)
    return resize(image, image_size)


# Augmentations that also take the epoch's mirror decision for the image.
EPOCH_AUGMENT_FUNCTIONS = {"translate_alternating_flip": translate_alternating_flip}
