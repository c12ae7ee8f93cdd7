"""AlexNet (Krizhevsky et al., 2012) adapted to 32x32 CIFAR-10 images, trained from scratch.

    normalise -> conv 5x5 (64) -> pool -> conv 5x5 (192) -> pool
    -> conv 3x3 (384) -> conv 3x3 (256) -> conv 3x3 (256) -> pool
    -> flatten (`features`) -> dropout -> dense 2048 -> dropout -> dense 2048 -> linear head

What is kept from the ImageNet network: five convolutions with its widths, overlapping 3x3
stride-2 max-pools after the first, second and fifth, ReLU, and a head of two wide
fully-connected layers with dropout 0.5. What changes for 32x32 inputs, as in the usual
CIFAR ports: the 11x11 stride-4 stem becomes a 5x5 stride-1 convolution (at stride 4 the
image would be 8x8 after the first layer), "same" padding keeps the maps at 32 -> 16 -> 8 ->
4, the fully-connected layers are 2048 wide rather than 4096 (the flattened map is 4x4x256
= 4096 values, not 9216), and BatchNorm after each convolution replaces the local response
normalisation (which later work found to add little) so that it trains with Adam.

With the defaults it has ~15.0M parameters, 12.6M of them in the fully-connected layers.
Grad-CAM explains the last 4x4 map, the input of the `features` flatten.
"""

import keras

from kerasvit.models import ModelSpec, pooled_feature_map
from kerasvit.models.cnn import CIFAR_MEAN, CIFAR_VARIANCE

# As in resnet.py: short runs have few steps to settle the moving statistics.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def build_alexnet(
    *,
    image_shape=(32, 32, 3),
    num_classes=10,
    conv_filters=(64, 192, 384, 256, 256),
    conv_kernel_sizes=(5, 5, 3, 3, 3),
    pool_after=(1, 2, 5),
    dense_units=(2048, 2048),
    dropout_rate=0.5,
):
    """Builds the CIFAR AlexNet. `pool_after` lists the (1-based) convolutions followed by a
    3x3 stride-2 max-pool; each halves the map."""
    if len(conv_filters) != len(conv_kernel_sizes):
        raise ValueError("conv_filters and conv_kernel_sizes must have one entry per "
                         f"convolution, got {list(conv_filters)} and {list(conv_kernel_sizes)}")
    if not set(pool_after) <= set(range(1, len(conv_filters) + 1)):
        raise ValueError(f"pool_after must name convolutions 1 to {len(conv_filters)}, "
                         f"got {list(pool_after)}")
    inputs = keras.Input(shape=tuple(image_shape), name="images")
    x = keras.layers.Normalization(mean=CIFAR_MEAN, variance=CIFAR_VARIANCE, name="normalize")(inputs)
    for index, (filters, kernel_size) in enumerate(zip(conv_filters, conv_kernel_sizes), start=1):
        x = keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=False,
                                kernel_initializer="he_normal", name=f"conv{index}")(x)
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                            name=f"conv{index}_bn")(x)
        x = keras.layers.Activation("relu", name=f"conv{index}_act")(x)
        if index in pool_after:
            x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{index}")(x)
    x = keras.layers.Flatten(name="features")(x)
    for index, units in enumerate(dense_units, start=1):
        x = keras.layers.Dropout(dropout_rate, name=f"fc{index}_dropout")(x)
        x = keras.layers.Dense(units, activation="relu", kernel_initializer="he_normal",
                               name=f"fc{index}")(x)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="head")(x)
    return keras.Model(inputs, outputs, name="alexnet")


SPEC = ModelSpec(
    name="alexnet",
    builder=build_alexnet,
    description="AlexNet adapted to 32x32 (5x5 stride-1 stem, 2048-wide head), ~15.0M params",
    # Tiny widths, the default layout (a 4x4 map at the end).
    tiny_args={"conv_filters": [16, 32, 48, 32, 32], "dense_units": [64, 64], "dropout_rate": 0.2},
    gradcam_layer=pooled_feature_map,
)
