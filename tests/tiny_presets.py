"""Tiny random keras-hub image classifier presets, saved with `save_to_preset` like a
downloaded preset (the real weights cannot be fetched on these machines): one per family
that the `pretrained` tests cover. Each has the family's own image converter with ImageNet
normalisation, as keras-hub's ImageNet presets do, at a small input size."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# What the converter does to [0, 255] pixels: (x / 255 - mean) / std.
IMAGENET_SCALE = [1 / (255 * s) for s in IMAGENET_STD]
IMAGENET_OFFSET = [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]

# family -> the converter's input size. ResNet at 40x40: not CIFAR's 32, so that the tests
# see the input size come from the preset. The tiny MobileNetV3 halves the resolution 4 times:
# 32x32 leaves a 2x2 map.
IMAGE_SIZES = {"resnet": (40, 40), "mobilenet": (32, 32), "deit": (32, 32), "vit": (32, 32),
               "vit224": (224, 224), "efficientnet": (40, 40)}
# The families the configs' presets stand for. vit224 is ViT-B/16's layout at its real input
# size (patches of 16 at 224x224, 196 patches), one narrow block so that it stays cheap: the
# one-graph tests upsample CIFAR's 32x32 in the model, as the real fine-tune does.
FAMILIES = ("resnet", "mobilenet", "deit", "vit")


def resnet(keras_hub):
    # keras-hub requires 64 filters in the first stage (and a stem as wide).
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block")
    return backbone, keras_hub.layers.ResNetImageConverter, keras_hub.models.ResNetImageClassifier


def mobilenet(keras_hub):
    """MobileNetV3 with two inverted-residual stages (keras-hub's small layout, shrunk)."""
    backbone = keras_hub.models.MobileNetBackbone(
        stackwise_expansion=[[4, 4], [4, 4]], stackwise_num_blocks=[2, 2],
        stackwise_num_filters=[[16, 16], [24, 24]], stackwise_kernel_size=[[3, 3], [5, 5]],
        stackwise_num_strides=[[2, 1], [2, 1]], stackwise_se_ratio=[[None, None], [0.25, 0.25]],
        stackwise_activation=[["relu", "relu"], ["hard_swish", "hard_swish"]],
        stackwise_padding=[[1, 1], [2, 2]], output_num_filters=32, depthwise_filters=8,
        depthwise_stride=2, depthwise_residual=False, last_layer_filter=48,
        squeeze_and_excite=0.5, input_num_filters=8)
    return (backbone, keras_hub.layers.MobileNetImageConverter,
            keras_hub.models.MobileNetImageClassifier)


def deit(keras_hub):
    backbone = keras_hub.models.DeiTBackbone(
        image_shape=(*IMAGE_SIZES["deit"], 3), patch_size=8, num_layers=2, num_heads=2,
        hidden_dim=32, intermediate_dim=64)
    return backbone, keras_hub.layers.DeiTImageConverter, keras_hub.models.DeiTImageClassifier


def vit(keras_hub):
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(*IMAGE_SIZES["vit"], 3), patch_size=8, num_layers=2, num_heads=2,
        hidden_dim=32, mlp_dim=64)
    return backbone, keras_hub.layers.ViTImageConverter, keras_hub.models.ViTImageClassifier


def vit224(keras_hub):
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(*IMAGE_SIZES["vit224"], 3), patch_size=16, num_layers=1, num_heads=2,
        hidden_dim=32, mlp_dim=64)
    return backbone, keras_hub.layers.ViTImageConverter, keras_hub.models.ViTImageClassifier


def efficientnet(keras_hub):
    """EfficientNet-B0's first two stages (keras-hub's timm layout). Its
    backbone takes `input_shape`, not `image_shape`, so from_preset cannot fix its size."""
    from keras_hub.src.utils.timm import convert_efficientnet

    config = convert_efficientnet.convert_backbone_config({"architecture": "efficientnet_b0"})
    config = {key: value[:2] if key.startswith("stackwise_") and isinstance(value, list)
              else value for key, value in config.items()}
    config["stackwise_num_repeats"] = [1, 1]
    backbone = keras_hub.models.EfficientNetBackbone(**config)
    return (backbone, keras_hub.layers.EfficientNetImageConverter,
            keras_hub.models.EfficientNetImageClassifier)


MAKERS = {"resnet": resnet, "mobilenet": mobilenet, "deit": deit, "vit": vit,
          "efficientnet": efficientnet, "vit224": vit224}


def save_tiny_preset(family, path, images):
    """Builds the family's tiny classifier (a 5-class head the tests replace), saves it with
    save_to_preset at `path`; returns the backbone's weights as saved.

    `images` (float, [0, 255]) set the BatchNorm statistics first, as pretraining leaves
    them in a real preset: a random network's initial ones (mean 0, variance 1) let a
    frozen backbone's activations grow or vanish layer by layer."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone, converter_class, classifier_class = MAKERS[family](keras_hub)
    converter = converter_class(image_size=IMAGE_SIZES[family], scale=IMAGENET_SCALE,
                                offset=IMAGENET_OFFSET)
    pixels = converter(keras.ops.convert_to_tensor(images, "float32"))
    norms = [layer for layer in backbone._flatten_layers()
             if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0  # one training-mode pass sets the statistics to the batch's
    backbone(pixels, training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum
    preprocessor = classifier_class.preprocessor_cls(image_converter=converter)
    classifier = classifier_class(backbone=backbone, num_classes=5, preprocessor=preprocessor)
    classifier.save_to_preset(str(path))
    return [keras.ops.convert_to_numpy(w).copy() for w in backbone.weights]
