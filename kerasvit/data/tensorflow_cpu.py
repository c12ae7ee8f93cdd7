"""TensorFlow for the input pipeline only: imported through here, it is kept off any GPU,
so that it cannot take the accelerator memory JAX or torch need."""

import tensorflow as tf

try:
    tf.config.set_visible_devices([], "GPU")
except RuntimeError:
    pass  # Already initialised (e.g. by kerasvit.cli.import_tensorflow_quietly).

__all__ = ["tf"]
