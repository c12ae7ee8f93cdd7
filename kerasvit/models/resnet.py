"""ResNet-18 for 32x32 images, the CIFAR variant of He et al. (2016) used by most CIFAR
baselines: a 3x3 stride-1 stem and no max-pool (the ImageNet 7x7 stride-2 stem + pool would
shrink 32x32 to 8x8 before the first block), then four stages of two basic blocks with
64, 128, 256, 512 filters; stages 2-4 halve the resolution (32 -> 16 -> 8 -> 4).

With the defaults it has ~11.2M parameters. Argument names follow keras-hub's
`ResNetBackbone` (`stackwise_num_filters`, `stackwise_num_blocks`, `stackwise_num_strides`);
`input_conv_filters` is one number here because the CIFAR stem is one convolution.
"""

import keras

from kerasvit.models import ModelSpec, pooled_feature_map
from kerasvit.models.cnn import CIFAR_MEAN, CIFAR_VARIANCE

# momentum 0.9 rather than Keras's 0.99, as in cnn.py: short runs have few steps to settle
# the moving statistics that evaluation uses.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def conv_bn(x, filters, kernel_size, strides, name, zero_gamma=False):
    x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                            use_bias=False, kernel_initializer="he_normal",
                            name=f"{name}_conv")(x)
    # A zero scale on the last BN of each residual branch makes every block start as the
    # identity (Goyal et al., 2017), which lets the deep network train from the first step.
    return keras.layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn",
        gamma_initializer="zeros" if zero_gamma else "ones")(x)


def basic_block(x, filters, strides, name):
    """Two 3x3 convolutions plus a shortcut (a 1x1 projection when the shape changes).
    The block's output activation is named `{name}_b_act`."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv_bn(x, filters, 1, strides, name=f"{name}_shortcut")
    x = conv_bn(x, filters, 3, strides, name=f"{name}_a")
    x = keras.layers.Activation("relu", name=f"{name}_a_act")(x)
    x = conv_bn(x, filters, 3, 1, name=f"{name}_b", zero_gamma=True)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.Activation("relu", name=f"{name}_b_act")(x)


def build_resnet18(
    *,
    image_shape=(32, 32, 3),
    num_classes=10,
    input_conv_filters=64,
    stackwise_num_filters=(64, 128, 256, 512),
    stackwise_num_blocks=(2, 2, 2, 2),
    stackwise_num_strides=(1, 2, 2, 2),
    dropout_rate=0.0,
):
    """Builds the CIFAR ResNet. The last block's output, a 4x4 map, is what Grad-CAM
    explains (the `features` layer pools it)."""
    stages = (stackwise_num_filters, stackwise_num_blocks, stackwise_num_strides)
    if len({len(values) for values in stages}) != 1:
        raise ValueError("stackwise_num_filters, stackwise_num_blocks and stackwise_num_strides "
                         f"must have one entry per stage, got {[list(v) for v in stages]}")
    inputs = keras.Input(shape=tuple(image_shape), name="images")
    x = keras.layers.Normalization(mean=CIFAR_MEAN, variance=CIFAR_VARIANCE, name="normalize")(inputs)
    x = conv_bn(x, input_conv_filters, 3, 1, name="stem")
    x = keras.layers.Activation("relu", name="stem_act")(x)
    for stage, (filters, blocks, strides) in enumerate(zip(*stages), start=1):
        for block in range(1, blocks + 1):
            # Only a stage's first block changes the resolution.
            x = basic_block(x, filters, strides if block == 1 else 1, name=f"stage{stage}_block{block}")
    features = keras.layers.GlobalAveragePooling2D(name="features")(x)
    features = keras.layers.Dropout(dropout_rate, name="dropout")(features)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="head")(features)
    return keras.Model(inputs, outputs, name="resnet18")


SPEC = ModelSpec(
    name="resnet18",
    builder=build_resnet18,
    description="CIFAR ResNet-18 (3x3 stem, no max-pool), ~11.2M params",
    # Tiny widths and one block per stage, strides as in the default (a 4x4 map at the end).
    tiny_args={"input_conv_filters": 16, "stackwise_num_filters": [16, 32, 64, 128],
               "stackwise_num_blocks": [1, 1, 1, 1]},
    gradcam_layer=pooled_feature_map,
)
