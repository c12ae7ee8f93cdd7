"""The pieces of the airbench-style CNN that Keras does not have: a patch-whitening first
convolution set from the training images, and an initializer that makes a convolution start
as the identity on its first channels.

Both return exactly their init arguments from `get_config` and reload from `.keras` files.
"""

import keras
import numpy as np
from keras import ops

from kerasvit.models import image_size

PACKAGE = "kerasvit"


@keras.saving.register_keras_serializable(package=PACKAGE)
class PatchWhitening(keras.layers.Layer):
    """A `kernel_size` x `kernel_size` valid convolution whose filters whiten image patches.

    `adapt(images)` sets the 2 * C * k * k filters to the eigenvectors of the patches'
    (uncentred) covariance, each scaled by 1 / sqrt(eigenvalue + epsilon), and their
    negatives (so that the GELU after it keeps both signs). On those patches the first half
    of the outputs then has a covariance of diag(eigenvalue / (eigenvalue + epsilon)), close
    to the identity. The kernel is a fixed (non-trainable) weight, saved with the model; the
    bias trains (for how long is the optimizer's business: `frozen_after_steps`).

    Before `adapt` the kernel is a plain random convolution, so the layer works untrained
    too (tiny tests, speed benchmarks).

    `data_format` is the layout of the images it receives (a Keras convolution kernel is
    (k, k, C, filters) in both, so the weights do not depend on it).
    """

    def __init__(self, kernel_size=2, epsilon=5e-4, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = kernel_size
        self.epsilon = epsilon
        self.data_format = data_format

    @property
    def channels_first(self):
        return self.data_format == "channels_first"

    def build(self, input_shape):
        channels = input_shape[1] if self.channels_first else input_shape[-1]
        self.filters = 2 * channels * self.kernel_size**2
        self.kernel = self.add_weight(
            name="kernel", shape=(self.kernel_size, self.kernel_size, channels, self.filters),
            initializer=keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"),
            trainable=False)
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def call(self, images):
        kernel = ops.cast(self.kernel, images.dtype)
        bias = ops.cast(self.bias, images.dtype)
        if self.channels_first:
            bias = ops.reshape(bias, (-1, 1, 1))
        return ops.conv(images, kernel, padding="valid", data_format=self.data_format) + bias

    def compute_output_shape(self, input_shape):
        if self.channels_first:
            batch, channels, height, width = input_shape
        else:
            batch, height, width, channels = input_shape
        shrink = self.kernel_size - 1
        height, width = (None if size is None else size - shrink for size in (height, width))
        filters = 2 * channels * self.kernel_size**2
        if self.channels_first:
            return (batch, filters, height, width)
        return (batch, height, width, filters)

    def adapt(self, images):
        """Sets the kernel from `images`: what this layer receives (N, H, W, C), or
        (N, C, H, W) in channels_first, as floats."""
        images = np.asarray(images, np.float64)
        if self.channels_first:
            images = images.transpose(0, 2, 3, 1)
        eigenvalues, eigenvectors = patch_eigenvectors(images, self.kernel_size)
        scaled = eigenvectors / np.sqrt(eigenvalues + self.epsilon)  # (k*k*C, k*k*C) columns
        filters = np.concatenate([scaled, -scaled], axis=1)
        self.kernel.assign(filters.reshape(self.kernel.shape).astype("float32"))

    def get_config(self):
        config = super().get_config()
        config.update({"kernel_size": self.kernel_size, "epsilon": self.epsilon,
                       "data_format": self.data_format})
        return config


def image_patches(images, kernel_size):
    """Every kernel_size x kernel_size patch of (N, H, W, C) images, flattened in the
    (row, column, channel) order of a Keras convolution kernel: (num_patches, k*k*C)."""
    windows = np.lib.stride_tricks.sliding_window_view(images, (kernel_size, kernel_size),
                                                       axis=(1, 2))  # (N, H', W', C, k, k)
    windows = windows.transpose(0, 1, 2, 4, 5, 3)  # (N, H', W', k, k, C)
    return windows.reshape(-1, kernel_size * kernel_size * images.shape[-1])


def patch_eigenvectors(images, kernel_size, chunk=500):
    """Eigenvalues (largest first) and eigenvectors (columns) of the patch covariance."""
    dim = kernel_size * kernel_size * images.shape[-1]
    covariance, count = np.zeros((dim, dim)), 0
    for start in range(0, len(images), chunk):  # chunks keep the patch copies small
        patches = image_patches(images[start:start + chunk], kernel_size)
        covariance += patches.T @ patches
        count += len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance / count)
    return eigenvalues[::-1], eigenvectors[:, ::-1]


def adapt_whitening_layers(model, images, seed, num_images=5000):
    """Adapts every PatchWhitening layer of `model` to `num_images` training images drawn
    with `seed` (what the layer sees: the model's own preprocessing applied first). Returns
    (names of the layers adapted, number of images used)."""
    layers = [layer for layer in model.layers if isinstance(layer, PatchWhitening)]
    if not layers:
        return [], 0
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(images), size=min(num_images, len(images)), replace=False))
    sample = np.asarray(images[chosen], np.float32)
    size = image_size(model)
    if sample.shape[1:3] != size:  # as the training stream resizes them
        sample = keras.ops.convert_to_numpy(
            keras.ops.image.resize(sample, size, interpolation="bilinear"))
    for layer in layers:
        inputs_of_layer = keras.Model(model.input, layer.input)
        # Called directly rather than through predict(), which a multi-process distribution
        # refuses numpy input for; every process computes the same (seeded) kernel.
        seen = [keras.ops.convert_to_numpy(inputs_of_layer(sample[start:start + 500]))
                for start in range(0, len(sample), 500)]
        layer.adapt(np.concatenate(seen))
    return [layer.name for layer in layers], len(sample)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PartialIdentity(keras.initializers.Initializer):
    """A conv kernel (kh, kw, in, out) that starts as the identity on its first min(in, out)
    output channels (a centre tap of 1 from the same input channel, zeros elsewhere) and as
    PyTorch's default uniform init (bound 1 / sqrt(fan_in)) on the rest. airbench starts
    its convolutions this way: a block then begins close to passing its input through."""

    def __init__(self, seed=None):
        self.seed = seed

    def __call__(self, shape, dtype=None):
        rows, cols, channels_in, channels_out = shape
        random = keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform", seed=self.seed)
        kernel = random(shape, dtype=dtype)
        identity = np.zeros(shape, "float32")
        is_identity = np.zeros(shape, bool)
        count = min(channels_in, channels_out)
        is_identity[..., :count] = True
        identity[rows // 2, cols // 2, np.arange(count), np.arange(count)] = 1.0
        return ops.where(is_identity, ops.cast(identity, kernel.dtype), kernel)

    def get_config(self):
        return {"seed": self.seed}
