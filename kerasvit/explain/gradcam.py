"""Grad-CAM (Selvaraju et al. 2017) on a named convolutional layer: the feature maps
weighted by the spatial mean of the class score's gradient, through ReLU. The gradient is
the one backend-specific step (kerasvit.backend_ops)."""


def split_at(model, layer_name):
    """(images -> feature map, feature map -> logits), sharing the model's layers."""
    import keras

    layer = model.get_layer(layer_name)
    features = layer.output
    if isinstance(layer, keras.Model):
        # A nested model (a keras-hub backbone): its `output` is the one of its own graph;
        # the model's graph holds the tensor of the call inside the model. A backbone just
        # rebuilt into a one-graph preset model (kerasvit.models.preset_graph) also keeps
        # its call in the keras-hub classifier it came from: take the one in this graph.
        (node,) = [node for node in layer._inbound_nodes if in_graph(model, node)]
        features = node.output_tensors[0]
    return keras.Model(model.inputs, features), keras.Model(features, model.outputs[0])


def in_graph(model, node):
    return any(node is other for nodes in model._nodes_by_depth.values() for other in nodes)


def model_pixels(model, images):
    """What the model's first layer sees. A keras-hub classifier (a `PipelineModel`) runs
    its image converter (resize + normalisation) outside its graph, in fit and predict: it
    is applied here. kerasvit's preset models have it inside (Resizing, Rescaling)."""
    import keras

    images = keras.ops.convert_to_tensor(images, "float32")
    converter = getattr(getattr(model, "preprocessor", None), "image_converter", None)
    return images if converter is None else converter(images)


def grad_cam(model, images, class_indices, layer_name):
    """Grad-CAM (Selvaraju et al., 2017): the feature map at `layer_name`, each channel
    weighted by the spatial mean of the class score's gradient, summed, ReLU.
    Returns (batch, feature_height, feature_width), unnormalised."""
    import keras

    from kerasvit import backend_ops

    feature_model, head_model = split_at(model, layer_name)
    features = feature_model(model_pixels(model, images), training=False)
    features = keras.ops.convert_to_numpy(keras.ops.cast(features, "float32"))
    _, gradients = backend_ops.class_score_gradients(head_model, features, class_indices)
    channel_weights = gradients.mean(axis=(1, 2), keepdims=True)
    return (features * channel_weights).sum(axis=-1).clip(min=0)
