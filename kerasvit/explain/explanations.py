"""What a model looks at, as numpy maps for a batch or one image (the function API):
Grad-CAM for CNNs, the class token's attention per layer and its rollout for ViTs.
Which one a model gets comes from its registry entry (`explain_method`)."""

import numpy as np

from kerasvit import CLASS_NAMES
from kerasvit.errors import UserError
from kerasvit.evaluation import classification
from kerasvit.explain import gradcam, overlays

BATCH_SIZE = 16


class ExplainError(UserError, RuntimeError):
    """Bad input for explain; the message is shown to the user as one line."""


def explain_method(model_name, model=None):
    """"gradcam" or "attention"; for `pretrained` it depends on the loaded `model`'s family."""
    from kerasvit.models import MODEL_NAMES, get_spec

    if model_name not in MODEL_NAMES:
        raise ExplainError(f"cannot tell which kerasvit model this is (name {model_name!r}); "
                           f"explain works for {', '.join(MODEL_NAMES)}")
    return get_spec(model_name).explain_method_of(model)


def input_size(model):
    """The size images are explained at: the model's own (a preset model resizes any size,
    but its attention grid and Grad-CAM map follow the size it computes at)."""
    from kerasvit import models

    return models.image_size(model)


def predict_logits(model, images):
    # predict(), not model(images): keras-hub's classifier applies its preprocessor there.
    return model.predict(images, batch_size=BATCH_SIZE, verbose=0)


def attention_maps(model, model_name, images):
    """{"rollout": (batch, rows, cols), "layers": (batch, layers, rows, cols)}."""
    from kerasvit.explain import attention

    scores = attention.attention_scores(model, model_name, images)
    grid = attention.patch_grid_shape(scores, images.shape[1:3])
    return {"rollout": attention.rollout_maps(scores, grid),
            "layers": attention.class_token_maps(scores, grid)}


def explain_batch(model, model_name, images, class_index=None):
    """Maps for a batch of images (float, [0, 255], at the model's input size).

    Returns {"method", "probabilities", "predicted", "explained" (Grad-CAM's class per
    image, else None) and the maps: "gradcam" or "rollout" + "layers"} as numpy arrays.
    """
    from kerasvit.models import get_spec

    method = explain_method(model_name, model)
    images = np.asarray(images, dtype="float32")
    logits = predict_logits(model, images)
    result = {"method": method, "probabilities": classification.softmax(logits),
              "predicted": logits.argmax(axis=-1), "explained": None}
    if method == "gradcam":
        explained = result["predicted"] if class_index is None else np.full(len(images), class_index)
        result["explained"] = explained
        result["gradcam"] = gradcam.grad_cam(model, images, explained,
                                             get_spec(model_name).gradcam_layer(model))
    else:
        result.update(attention_maps(model, model_name, images))
    return result


def explain_image(model, image, model_name, class_name=None, display_size=224):
    """One image (HxWx3, uint8 or float in [0, 255], any size) -> {"overlay": uint8
    display_size x display_size x 3 heat map over the image, "heatmap": the map on its grid
    scaled to [0, 1], "predicted_class", "probability", "explained_class" (Grad-CAM only),
    "method"}. For the demo."""
    from kerasvit.data import stream

    class_index = class_index_of(class_name) if class_name else None
    image = np.asarray(image)
    if image.ndim == 2:  # greyscale
        image = np.repeat(image[..., None], 3, axis=-1)
    images = stream.prepare_images(image[None, ..., :3], input_size(model))
    result = explain_batch(model, model_name, images, class_index)
    heat = headline_map(result, 0)
    predicted = int(result["predicted"][0])
    explained = result["explained"]
    return {
        "overlay": overlays.overlay(images[0], heat, display_size),
        "heatmap": overlays.normalise(heat),
        "predicted_class": CLASS_NAMES[predicted],
        "probability": float(result["probabilities"][0, predicted]),
        "explained_class": None if explained is None else CLASS_NAMES[int(explained[0])],
        "method": result["method"],
    }


def headline_map(result, index):
    """The one map that sums up image `index`: Grad-CAM, or the attention rollout."""
    return result["gradcam" if result["method"] == "gradcam" else "rollout"][index]



def class_index_of(class_name):
    if class_name not in CLASS_NAMES:
        raise ExplainError(f"unknown class {class_name!r}; choose one of {', '.join(CLASS_NAMES)}")
    return CLASS_NAMES.index(class_name)
