"""Test-time augmentation: softmax averaged over views of each image (the mirror; or
airbench's six: mirror x {none, one pixel up-left, one pixel down-right}, weighted)."""

import sys

import numpy as np

from kerasvit import CLASS_NAMES, models

TTA_METHODS = {
    "flip": "softmax averaged over each test image and its horizontal mirror (flip TTA)",
    "flip_translate": "softmax averaged over 6 views: the image and its mirror (weight 1/2), "
                      "and both shifted by one pixel down-right and up-left (1/4 each)",
}


def predict_logits(model, images, batch_size):
    """Logits for uint8 images, resized to the model's input exactly as in training."""
    from kerasvit.data import stream

    dataset = stream.evaluation_dataset(images, np.zeros(len(images), np.int64),
                                        image_size=models.feed_size(model, images.shape[1:3]),
                                        batch_size=batch_size)
    verbose = 1 if sys.stdout.isatty() else 0
    return np.asarray(model.predict(dataset, verbose=verbose), dtype=np.float32)


def flip_averaged_probabilities(model, images, batch_size, logits=None):
    """Mean of the softmax over each image and its mirror image (`logits`: the plain
    images' logits when already computed)."""
    from kerasvit.evaluation import classification

    if logits is None:
        logits = predict_logits(model, images, batch_size)
    mirrored = predict_logits(model, np.ascontiguousarray(images[:, :, ::-1]), batch_size)
    return (classification.softmax(logits) + classification.softmax(mirrored)) / 2.0


def shifted(images, offset):
    """Images moved by one pixel down-right (offset 0) or up-left (offset 2), with the
    edge reflected into the gap."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    height, width = images.shape[1:3]
    return np.ascontiguousarray(padded[:, offset:offset + height, offset:offset + width])


def tta_probabilities(model, images, batch_size, method="flip", logits=None):
    """"flip": the image and its mirror. "flip_translate" (airbench's): half that, plus a
    quarter each for the flip-averaged image shifted by one pixel either way."""
    plain = flip_averaged_probabilities(model, images, batch_size, logits)
    if method == "flip":
        return plain
    moved = [flip_averaged_probabilities(model, shifted(images, offset), batch_size)
             for offset in (0, 2)]
    return 0.5 * plain + 0.25 * moved[0] + 0.25 * moved[1]


def tta_evaluation(model, images, labels, batch_size, logits=None, method="flip"):
    from kerasvit.evaluation import classification

    probabilities = tta_probabilities(model, images, batch_size, method, logits)
    metrics = classification.classification_metrics(labels, probabilities, CLASS_NAMES)
    return {"method": TTA_METHODS[method],
            **{key: metrics[key] for key in ("accuracy", "top5_accuracy", "f1_macro")}}
