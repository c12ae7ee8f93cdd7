"""TensorFlow for the input pipeline only: imported through here, it is kept off any GPU,
so that it cannot take the accelerator memory JAX or torch need."""

import tensorflow as tf

try:
    tf.config.set_visible_devices([], "GPU")
except RuntimeError:
    pass  # Devices already initialised by an earlier TensorFlow import: nothing to change.

__all__ = ["tf"]
