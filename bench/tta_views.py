"""Test accuracy of a trained model under each test-time augmentation, from one set of
logits per view: plain, flip, and airbench's 6 views, averaging softmax (kerasvit's way)
or logits (airbench's).

    KERAS_BACKEND=tensorflow python bench/tta_views.py runs/<cnn run>
"""

import sys

import numpy as np

from kerasvit.evaluation import classification, tta
from kerasvit.evaluation import run as evaluation_run
from kerasvit.runs import loading


def main(path):
    model = loading.load_model(path)
    images, labels = evaluation_run.load_test_set("", 0)
    views = {"plain": images, "mirror": np.ascontiguousarray(images[:, :, ::-1])}
    for offset, name in ((0, "down_right"), (2, "up_left")):
        views[name] = tta.shifted(images, offset)
        views[name + "_mirror"] = np.ascontiguousarray(views[name][:, :, ::-1])
    logits = {name: tta.predict_logits(model, view, 500) for name, view in views.items()}
    weights = {"plain": 0.25, "mirror": 0.25, "down_right": 0.125, "down_right_mirror": 0.125,
               "up_left": 0.125, "up_left_mirror": 0.125}
    accuracy = lambda scores: float(np.mean(scores.argmax(axis=1) == labels))  # noqa: E731
    rows = {
        "none": accuracy(logits["plain"]),
        "flip, softmax averaged": accuracy(classification.softmax(logits["plain"]) + classification.softmax(logits["mirror"])),
        "6 views, softmax averaged": accuracy(sum(w * classification.softmax(logits[n]) for n, w in weights.items())),
        "6 views, logits averaged": accuracy(sum(w * logits[n] for n, w in weights.items())),
    }
    for name, value in rows.items():
        print(f"{name:28s} {value:.4f}")


if __name__ == "__main__":
    main(sys.argv[1])
