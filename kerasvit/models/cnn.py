"""A fast CIFAR CNN in the style of airbench (Jordan, 2024): a conv stem, then three
blocks of conv -> max-pool -> BN -> GELU -> conv -> BN -> GELU, global max-pool, linear head.

With the default widths (64, 128, 256) it has ~1.2M parameters.
"""

import keras

# Per-channel statistics of the CIFAR-10 training images, in [0, 255].
CIFAR_MEAN = (125.31, 122.95, 113.87)
CIFAR_VARIANCE = (62.99**2, 62.09**2, 66.70**2)


def conv_bn_gelu(x, filters, name, pool=False):
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    if pool:
        x = keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    # momentum 0.9 rather than Keras's 0.99: short CPU runs have few steps to settle the stats.
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
    return keras.layers.Activation("gelu", name=f"{name}_act")(x)


def build_cnn(
    *,
    image_shape=(32, 32, 3),
    num_classes=10,
    stem_width=32,
    widths=(64, 128, 256),
    dropout_rate=0.0,
):
    """Builds the CNN. The last block's activation, `block{len(widths)}_b_act`, is the
    feature map used for Grad-CAM (see `last_conv_layer_name`)."""
    inputs = keras.Input(shape=tuple(image_shape), name="images")
    x = keras.layers.Normalization(mean=CIFAR_MEAN, variance=CIFAR_VARIANCE, name="normalize")(inputs)
    x = conv_bn_gelu(x, stem_width, name="stem")
    for index, width in enumerate(widths, start=1):
        x = conv_bn_gelu(x, width, name=f"block{index}_a", pool=True)
        x = conv_bn_gelu(x, width, name=f"block{index}_b")
    features = keras.layers.GlobalMaxPooling2D(name="features")(x)
    features = keras.layers.Dropout(dropout_rate, name="dropout")(features)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="head")(features)
    return keras.Model(inputs, outputs, name="cnn")


def last_conv_layer_name(model):
    """Name of the last convolutional block's output (the Grad-CAM feature map)."""
    names = [layer.name for layer in model.layers if layer.name.endswith("_b_act")]
    return names[-1]
