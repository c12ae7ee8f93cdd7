"""Grad-CAM (Selvaraju et al. 2017) on a named convolutional layer: the feature maps
weighted by the spatial mean of the class score's gradient, through ReLU. The gradient is
the one backend-specific step (kerasvit.backend_ops)."""


def split_at(model, layer_name):
    """(images -> feature map, feature map -> logits), sharing the model's layers."""
    import keras

    features = model.get_layer(layer_name).output
    return keras.Model(model.inputs, features), keras.Model(features, model.outputs[0])


def grad_cam(model, images, class_indices, layer_name):
    """Grad-CAM (Selvaraju et al., 2017): the feature map at `layer_name`, each channel
    weighted by the spatial mean of the class score's gradient, summed, ReLU.
    Returns (batch, feature_height, feature_width), unnormalised."""
    import keras

    from kerasvit import backend_ops

    feature_model, head_model = split_at(model, layer_name)
    features = feature_model(keras.ops.convert_to_tensor(images, "float32"), training=False)
    features = keras.ops.convert_to_numpy(keras.ops.cast(features, "float32"))
    _, gradients = backend_ops.class_score_gradients(head_model, features, class_indices)
    channel_weights = gradients.mean(axis=(1, 2), keepdims=True)
    return (features * channel_weights).sum(axis=-1).clip(min=0)
