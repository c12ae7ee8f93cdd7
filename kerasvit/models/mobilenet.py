"""MobileNetV2 (Sandler et al., 2018) for 32x32 images, written here in Keras layers.

Why not `keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3))`: it builds
at 32x32 (its minimum), but
- its strides are ImageNet's: the 32x32 input is downsampled 32x to a 1x1 feature map, so
  the last stages see no spatial structure (and Grad-CAM has one pixel to show). The usual
  CIFAR adaptation, a stride-1 stem and a stride-1 second stage (final map 4x4), cannot be
  set through its arguments;
- its BatchNormalization momentum is fixed at 0.999: after the few hundred steps of a short
  CPU run the moving statistics that evaluation uses are still mostly their initial values;
- it expects inputs in [-1, 1] and has no normalisation layer of its own;
- it would sit in our model as one nested layer, hiding the blocks from `explain`.
keras-hub has no MobileNetV2 (its `MobileNetBackbone` is the V3 family at 224x224).

So this is the same architecture (inverted residual blocks: 1x1 expansion, 3x3 depthwise,
linear 1x1 projection, ReLU6, residual when the shape is kept) with the CIFAR strides. The
defaults are the paper's table 2 with strides (1, 1, 2, 2, 1, 2, 1) and a stride-1 stem,
~2.3M parameters. Argument names follow keras-hub's MobileNet backbone where they exist
(one value per stage instead of its per-block lists).
"""

import keras

from kerasvit.models import ModelSpec, pooled_feature_map
from kerasvit.models.cnn import CIFAR_MEAN, CIFAR_VARIANCE

# As in cnn.py: short runs have few steps to settle the moving statistics.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def conv_bn(x, filters, name, kernel_size=1, strides=1, activation=True, depthwise=False):
    """Conv (or depthwise conv) -> BN -> optional ReLU6, named {name}_conv/_bn/_act."""
    if depthwise:
        # He init over the 3x3 window each output really sees. Keras's default counts
        # fan-in as 9 x channels, which makes the kernels ~sqrt(channels) times too small:
        # Adam's fixed-size steps then change them so fast relatively that BatchNorm's
        # moving statistics lag far behind and short runs evaluate at chance.
        x = keras.layers.DepthwiseConv2D(
            kernel_size, strides=strides, padding="same", use_bias=False, name=f"{name}_conv",
            depthwise_initializer=keras.initializers.VarianceScaling(2.0, mode="fan_out"))(x)
    else:
        x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                                use_bias=False, kernel_initializer="he_normal",
                                name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                        name=f"{name}_bn")(x)
    if activation:
        x = keras.layers.ReLU(max_value=6.0, name=f"{name}_act")(x)
    return x


def inverted_residual(x, expansion, filters, strides, name):
    """Expand (1x1) -> depthwise 3x3 -> project (1x1, linear: no activation, as the paper
    argues ReLU in the narrow bottleneck destroys information); residual if shapes match."""
    in_filters = x.shape[-1]
    h = x
    if expansion != 1:
        h = conv_bn(h, in_filters * expansion, name=f"{name}_expand")
    h = conv_bn(h, None, name=f"{name}_dw", kernel_size=3, strides=strides, depthwise=True)
    h = conv_bn(h, filters, name=f"{name}_project", activation=False)
    if strides == 1 and in_filters == filters:
        h = keras.layers.Add(name=f"{name}_add")([x, h])
    return h


def build_mobilenet(
    *,
    image_shape=(32, 32, 3),
    num_classes=10,
    input_num_filters=32,
    stackwise_expansion=(1, 6, 6, 6, 6, 6, 6),
    stackwise_num_filters=(16, 24, 32, 64, 96, 160, 320),
    stackwise_num_blocks=(1, 2, 3, 4, 3, 3, 1),
    stackwise_num_strides=(1, 1, 2, 2, 1, 2, 1),
    last_layer_filter=1280,
    dropout_rate=0.2,
):
    """Builds the CIFAR MobileNetV2. Its last feature map (before pooling) is `top_b_act`."""
    stages = (stackwise_expansion, stackwise_num_filters, stackwise_num_blocks, stackwise_num_strides)
    if len({len(values) for values in stages}) != 1:
        raise ValueError("stackwise_expansion, stackwise_num_filters, stackwise_num_blocks and "
                         "stackwise_num_strides must have one entry per stage, got "
                         f"{[list(v) for v in stages]}")
    inputs = keras.Input(shape=tuple(image_shape), name="images")
    x = keras.layers.Normalization(mean=CIFAR_MEAN, variance=CIFAR_VARIANCE, name="normalize")(inputs)
    x = conv_bn(x, input_num_filters, name="stem", kernel_size=3)
    for stage, (expansion, filters, blocks, strides) in enumerate(zip(*stages), start=1):
        for block in range(1, blocks + 1):
            # Only a stage's first block changes the resolution.
            x = inverted_residual(x, expansion, filters, strides if block == 1 else 1,
                                  name=f"stage{stage}_block{block}")
    x = conv_bn(x, last_layer_filter, name="top", activation=False)
    x = keras.layers.ReLU(max_value=6.0, name="top_b_act")(x)
    features = keras.layers.GlobalAveragePooling2D(name="features")(x)
    features = keras.layers.Dropout(dropout_rate, name="dropout")(features)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="head")(features)
    return keras.Model(inputs, outputs, name="mobilenet")


SPEC = ModelSpec(
    name="mobilenet",
    builder=build_mobilenet,
    description="MobileNetV2 with CIFAR strides for 32x32, ~2.3M params",
    tiny_args={"input_num_filters": 8, "stackwise_expansion": [1, 4, 4, 4],
               "stackwise_num_filters": [8, 16, 24, 32], "stackwise_num_blocks": [1, 1, 1, 1],
               "stackwise_num_strides": [1, 2, 2, 2], "last_layer_filter": 64,
               "dropout_rate": 0.0},
    gradcam_layer=pooled_feature_map,
)
