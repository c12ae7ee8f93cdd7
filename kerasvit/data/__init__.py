"""The data area: CIFAR-10 and its splits (cifar), augmentations (augment) and the tf.data
streams that feed every backend (stream). TensorFlow appears in kerasvit only here and in
TensorBoard logging."""

import tensorflow as tf

# Keep TensorFlow off any GPU: it is only the input pipeline, and must not take
# accelerator memory that JAX or torch need.
try:
    tf.config.set_visible_devices([], "GPU")
except RuntimeError:
    pass  # Already initialised (e.g. by kerasvit.cli.import_tensorflow_quietly).
