"""The CIFAR-10 CNN of airbench94 (Jordan, 2024, "94% on CIFAR-10 in 3.29 seconds"), in
Keras layers.

    normalise -> 2x2 patch whitening (24 filters, fixed; set from the training images) -> GELU
    -> 3 blocks of [conv 3x3 -> max-pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU]
    -> global max-pool -> linear head (no bias) x 1/9

With the default widths (64, 256, 256) it has ~1.97M parameters. The recipe that trains it
(Nesterov SGD with per-1024-example hyperparameters, 64x learning rate on the BN offsets,
lookahead, alternating flips) lives in configs/cnn.toml and kerasvit.training.optimizers.

Choices that differ from a textbook CNN, and why (airbench's ablations):
- BatchNorm without a learned scale (the next conv can scale) and with momentum 0.6 (Keras'
  convention; PyTorch's 0.4): a short run has few steps to settle the statistics.
- Every conv starts as the identity on its first channels (`PartialIdentity`).
- The logits are scaled by 1/9: a small output scale at the start trains faster with
  label smoothing.

`data_format="auto"` runs the convolutions in the layout the backend computes fastest
(kerasvit.backend_ops.fastest_data_format: channels_first on torch, whose Keras layers
otherwise permute NHWC to NCHW and back around every convolution and pool). In either
layout the model takes NHWC images, hands Grad-CAM an NHWC feature map (`layout_out`) and
has the same weights; kerasvit.models.layouts switches between the two.
"""

import keras

from kerasvit import backend_ops
from kerasvit.models import ModelSpec, layouts, pooled_feature_map
from kerasvit.models.cnn_layers import PartialIdentity, PatchWhitening

# Per-channel statistics of the CIFAR-10 training images, in [0, 255].
CIFAR_MEAN = (125.31, 122.95, 113.87)
CIFAR_VARIANCE = (62.99**2, 62.09**2, 66.70**2)


DATA_FORMATS = ("auto", "channels_last", "channels_first")


def conv_block(x, filters, batch_norm_momentum, data_format, name):
    """conv -> pool -> BN -> GELU -> conv -> BN -> GELU."""
    for part, pool in (("a", True), ("b", False)):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                data_format=data_format, kernel_initializer=PartialIdentity(),
                                name=f"{name}_{part}_conv")(x)
        if pool:
            x = keras.layers.MaxPooling2D(2, data_format=data_format, name=f"{name}_{part}_pool")(x)
        x = keras.layers.BatchNormalization(axis=layouts.channel_axis(data_format),
                                            momentum=batch_norm_momentum, epsilon=1e-12,
                                            scale=False,
                                            name=f"{name}_{part}_bn")(x)
        x = keras.layers.Activation("gelu", name=f"{name}_{part}_act")(x)
    return x


def build_cnn(
    *,
    image_shape=(32, 32, 3),
    num_classes=10,
    whitening_kernel_size=2,
    widths=(64, 256, 256),
    batch_norm_momentum=0.6,
    logit_scale=1 / 9,
    data_format="auto",
):
    """Builds the CNN. Train it through kerasvit.training.loop.fit, which adapts the
    whitening layer to the training images first."""
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format {data_format!r} is not one of {', '.join(DATA_FORMATS)}")
    if data_format == "auto":
        data_format = backend_ops.fastest_data_format()
    inputs = keras.Input(shape=tuple(image_shape), name="images")
    x = keras.layers.Normalization(mean=CIFAR_MEAN, variance=CIFAR_VARIANCE, name="normalize")(inputs)
    x = layouts.layout_layer(data_format, layouts.LAYOUT_IN)(x)
    x = PatchWhitening(kernel_size=whitening_kernel_size, data_format=data_format, name="whiten")(x)
    x = keras.layers.Activation("gelu", name="whiten_act")(x)
    for index, width in enumerate(widths, start=1):
        x = conv_block(x, width, batch_norm_momentum, data_format, name=f"block{index}")
    x = layouts.layout_layer(data_format, layouts.LAYOUT_OUT)(x)  # NHWC again, on the small last map
    features = keras.layers.GlobalMaxPooling2D(name="features")(x)
    logits = keras.layers.Dense(
        num_classes, use_bias=False, dtype="float32", name="head",
        kernel_initializer=keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"))(features)
    outputs = keras.layers.Rescaling(logit_scale, dtype="float32", name="logit_scale")(logits)
    return keras.Model(inputs, outputs, name="cnn")


SPEC = ModelSpec(
    name="cnn",
    builder=build_cnn,
    description="airbench94's CNN for 32x32, ~2.0M params",
    tiny_args={"widths": [16, 32, 64]},
    gradcam_layer=pooled_feature_map,
)
