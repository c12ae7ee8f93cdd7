"""keras-hub presets as one Keras graph from raw pixels to logits.

keras-hub's `ImageClassifier` is a `PipelineModel`: its image converter (resize to the
preset's size, then scale and offset) runs outside the compiled model, mapped over the
input pipeline on the host in fit/evaluate/predict and called eagerly in
train_on_batch/predict_on_batch. `from_pipeline_model` rebuilds such a classifier as one
functional model: images of any size (uint8 or float, [0, 255]) -> `Resizing` (the
converter's size and interpolation) -> `Rescaling` (its scale and offset, per channel
where it has them), both in float32 -> the same backbone and head layers (the weights are
shared, not copied) -> float32 logits. The resize and normalisation then run inside the
compiled function, on the accelerator, on every backend, and `model.keras` carries them.

Model code: `keras` only (keras-hub's layers come with the classifier passed in).
"""

import keras

# Names of the two preprocessing layers: how the rest of kerasvit recognises the model and
# reads its image size (`kerasvit.models.image_size`) after a save and load.
RESIZING = "preset_resizing"
RESCALING = "preset_rescaling"


def from_pipeline_model(classifier, name=None):
    """The one-graph model of a keras-hub `ImageClassifier` that has an image converter
    with an image size; `name` defaults to the classifier's."""
    converter = classifier.preprocessor.image_converter
    inputs = keras.Input((None, None, 3), dtype="float32", name="images")
    resizing, rescaling = preprocessing_layers(converter)
    pixels = rescaling(resizing(inputs))
    return keras.Model(inputs, head_on(classifier, pixels), name=name or classifier.name)


def preprocessing_layers(converter):
    """(Resizing, Rescaling) doing what `converter` does to [0, 255] images, in float32 (so
    that mixed precision leaves the pixels as the converter computes them)."""
    resizing = keras.layers.Resizing(
        *converter.image_size, interpolation=converter.interpolation,
        crop_to_aspect_ratio=converter.crop_to_aspect_ratio,
        pad_to_aspect_ratio=converter.pad_to_aspect_ratio, antialias=converter.antialias,
        dtype="float32", name=RESIZING)
    scale = 1.0 if converter.scale is None else as_plain(converter.scale)
    offset = 0.0 if converter.offset is None else as_plain(converter.offset)
    return resizing, keras.layers.Rescaling(scale, offset, dtype="float32", name=RESCALING)


def as_plain(value):
    """A float or a list of floats (per channel), as the layer's config can carry them."""
    if isinstance(value, (int, float)):
        return float(value)
    return [float(v) for v in value]


def head_on(classifier, pixels):
    """The classifier's own graph (its backbone, then its head's layers and ops) applied to
    `pixels`: the classifier's input is its backbone's, so nothing is left out."""
    (logits,) = keras.tree.flatten(classifier._run_through_graph([pixels]))
    return logits


def is_preset_graph(model):
    return find_layer(model, RESIZING) is not None and find_layer(model, RESCALING) is not None


def find_layer(model, name):
    return next((layer for layer in getattr(model, "layers", ()) if layer.name == name), None)


def is_pipeline_model(model):
    """A keras-hub classifier that applies its image converter outside its graph."""
    converter = getattr(getattr(model, "preprocessor", None), "image_converter", None)
    return converter is not None and hasattr(model, "backbone")


def upgrade(model, name=None):
    """A keras-hub classifier saved before kerasvit made presets one graph -> its one-graph
    model with the same weights; every other model as it is."""
    if not is_pipeline_model(model):
        return model
    return from_pipeline_model(model, name or legacy_name(model))


def legacy_name(classifier):
    """The registry name of an old keras-hub classifier, as `kerasvit.runs.loading` told
    it from its class (ViT: vit_b16, other families: pretrained)."""
    return "vit_b16" if type(classifier).__name__ == "ViTImageClassifier" else "pretrained"


def backbone_of(model):
    """The keras-hub backbone layer of a one-graph model or of a keras-hub classifier."""
    if getattr(model, "backbone", None) is not None:  # a keras-hub task
        return model.backbone
    import keras_hub

    found = [layer for layer in model.layers if isinstance(layer, keras_hub.models.Backbone)]
    if len(found) != 1:
        raise ValueError(f"model {model.name} has {len(found)} keras-hub backbones, not one")
    return found[0]


def pixels_function(model):
    """images in [0, 255] -> what the backbone takes (resized and normalised), in float32:
    the model's preprocessing layers, or a keras-hub classifier's image converter."""
    if is_pipeline_model(model):
        converter = model.preprocessor.image_converter
        return lambda images: converter(keras.ops.convert_to_tensor(images, "float32"))
    resizing, rescaling = find_layer(model, RESIZING), find_layer(model, RESCALING)
    return lambda images: rescaling(resizing(keras.ops.convert_to_tensor(images, "float32")))


def preset_parts(model):
    """(pixels function, backbone, head layers) of a preset model: what explain runs block
    by block and what a linear probe trains (every layer after the backbone that has
    weights)."""
    backbone = backbone_of(model)
    skip = {id(backbone), id(find_layer(model, RESIZING)), id(find_layer(model, RESCALING))}
    head = [layer for layer in model.layers if id(layer) not in skip and layer.weights]
    return pixels_function(model), backbone, head


def image_size(model):
    """(height, width) the backbone sees: the Resizing layer's, None when it has none."""
    resizing = find_layer(model, RESIZING)
    return None if resizing is None else (int(resizing.height), int(resizing.width))
