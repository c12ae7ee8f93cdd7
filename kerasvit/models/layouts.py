"""The image layout a convolutional model computes in, and the same model in the other one.

A model built for either layout (the cnn: `data_format`) takes NHWC images and has two
layout layers: `layout_in` after its preprocessing and `layout_out` before its global pool,
Permutes to NCHW and back in channels_first, Identity layers in channels_last. So both
layouts have the same graph and the same weights in the same order (a Keras convolution
kernel is (k, k, in, out) in both), and switching is a layer-for-layer clone.

Why both: Keras on torch permutes NHWC to NCHW and back around every convolution and pool
unless the model is channels_first, while TensorFlow's CPU convolutions without oneDNN (CPUs
without AVX-512) have no NCHW kernels at all. So a run computes in the backend's fastest
layout (kerasvit.backend_ops.fastest_data_format), its `.keras` file is written in
channels_last, which every backend runs, and kerasvit's loader switches a loaded model to
the fastest layout again.
"""

import keras

LAYOUT_IN, LAYOUT_OUT = "layout_in", "layout_out"
TO_CHANNELS_FIRST, TO_CHANNELS_LAST = (3, 1, 2), (2, 3, 1)


def layout_layer(data_format, name):
    """The layer named `name` (LAYOUT_IN or LAYOUT_OUT) of a model in `data_format`."""
    if data_format == "channels_first":
        return keras.layers.Permute(TO_CHANNELS_FIRST if name == LAYOUT_IN else TO_CHANNELS_LAST,
                                    name=name)
    return keras.layers.Identity(name=name)


def channel_axis(data_format):
    return 1 if data_format == "channels_first" else -1


def has_layouts(model):
    names = {layer.name for layer in model.layers}
    return {LAYOUT_IN, LAYOUT_OUT} <= names


def data_format_of(model):
    """"channels_first" or "channels_last" for a model with layout layers, else None."""
    if not has_layouts(model):
        return None
    is_permute = isinstance(model.get_layer(LAYOUT_IN), keras.layers.Permute)
    return "channels_first" if is_permute else "channels_last"


def layout_choice(model, setting):
    """{"value", "setting", "reason"} for env.json and the run's log, or None for a model
    without layout layers."""
    value = data_format_of(model)
    if value is None:
        return None
    if setting != "auto":
        reason = f"model_args.data_format={setting}"
    else:
        reason = (f"auto: the fastest layout on {keras.backend.backend()} "
                  "(kerasvit.backend_ops.fastest_data_format)")
    return {"value": value, "setting": setting,
            "reason": reason + "; model.keras is written in channels_last"}


def to_data_format(model, data_format):
    """`model` computing in `data_format`, with the same weights: the model itself when it
    already does or has no layout layers."""
    if data_format_of(model) in (None, data_format):
        return model
    inside = layers_between_layouts(model)

    def clone(layer):
        if layer.name in (LAYOUT_IN, LAYOUT_OUT):
            return layout_layer(data_format, layer.name)
        config = layer.get_config()
        if layer.name in inside:
            if "data_format" in config:
                config["data_format"] = data_format
            if isinstance(layer, keras.layers.BatchNormalization):
                config["axis"] = channel_axis(data_format)
        return layer.__class__.from_config(config)

    switched = keras.models.clone_model(model, clone_function=clone)
    switched.set_weights(model.get_weights())
    return switched


def layers_between_layouts(model):
    """Names of the layers after `layout_in` and before `layout_out` (model.layers of a
    functional model is in the order its graph computes them)."""
    names = [layer.name for layer in model.layers]
    return set(names[names.index(LAYOUT_IN) + 1:names.index(LAYOUT_OUT)])
