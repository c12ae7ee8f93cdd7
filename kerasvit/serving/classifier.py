"""The demo's logic without Gradio: the served model, reading uploads (checked before they
are decoded), classifying an image with its inference time and explanation overlay, and the
gallery of CIFAR-10 test images. kerasvit.serving.page puts it on a Gradio page; the tests
call it directly.
"""

import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, UnidentifiedImageError

from kerasvit import CLASS_NAMES, models
from kerasvit.data import cifar, stream
from kerasvit.data.images import MAX_PIXELS, TooManyPixels, open_image
from kerasvit.errors import UserError
from kerasvit.evaluation import classification
from kerasvit.explain import explanations
from kerasvit.runs import loading

TOP_K = 5
# Below this an image holds nothing recognisable once stretched to the model's input.
MIN_SIDE = 8
EXAMPLE_POOL = 200  # the first test images, which hold every class


class BadImage(UserError, ValueError):
    """An upload the demo cannot classify; the message is shown in the page."""


@dataclasses.dataclass
class ServedModel:
    """The model behind the page and what the page says about it."""
    model: object
    name: str  # registry name: cnn, vit or vit_b16
    backend: str
    source: str  # run folder or .keras file
    test_accuracy: float | None = None
    # One prediction at a time: the timing stays honest and backends need not be thread-safe.
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    @property
    def input_size(self):
        return models.image_size(self.model)


def load_served_model(path, backend, unsafe_load=False):
    model, config, run_dir = loading.load_run(path, unsafe_load)
    name = loading.model_name(model, config)
    explanations.explain_method(name, model)  # refuses a model the page cannot explain, before serving
    metrics = loading.read_run_file(run_dir, "metrics.json")
    return ServedModel(model, name, backend, str(run_dir or path), test_accuracy_of(metrics))


def test_accuracy_of(metrics):
    """Training's full test-set accuracy, else a later evaluation's; None without metrics."""
    if not metrics:
        return None
    if "test_accuracy" in metrics:
        return float(metrics["test_accuracy"])
    accuracy = (metrics.get("evaluation") or {}).get("accuracy")
    return None if accuracy is None else float(accuracy)


def gallery_examples(data_dir=None):
    """The first CIFAR-10 test image of each class, as [(uint8 32x32x3, class name)] in class
    order; [] when no prepared copy is found (the page then shows uploads only: downloading
    at start-up would stall for minutes offline)."""
    builder = tfds.builder("cifar10", data_dir=cifar.resolve_data_dir(data_dir or ""))
    if not builder.is_prepared():
        return []
    dataset = builder.as_dataset(split=f"test[:{EXAMPLE_POOL}]", batch_size=-1,
                                 as_supervised=True)
    images, labels = tfds.as_numpy(dataset)
    first = {}
    for image, label in zip(images, labels):
        first.setdefault(int(label), image)
    return [(first[label], CLASS_NAMES[label]) for label in sorted(first)]


def read_upload(path):
    """An uploaded file -> (uint8 RGB pixels, notes on what was converted). Raises BadImage
    with a message for the page when the file cannot or should not be classified."""
    name = Path(path).name
    try:
        with open_image(path) as image:  # the pixel count is checked on the header first
            check_size(name, *image.size)
            image.load()
            notes = conversion_notes(image)
            # convert("RGB") drops alpha without compositing, as kerasvit.predict does.
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except BadImage:
        raise
    except TooManyPixels as error:
        raise BadImage(f"{name} is {error.width}x{error.height} pixels ({error.megapixels:.0f} "
                       f"megapixels); the demo takes up to {MAX_PIXELS / 1e6:.0f} megapixels, "
                       "please resize it") from None
    except Image.DecompressionBombError:
        # Image.open itself refuses twice PIL's pixel limit, before check_size runs.
        raise BadImage(f"{name} has over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels "
                       f"(a possible decompression bomb); the demo takes up to "
                       f"{MAX_PIXELS / 1e6:.0f} megapixels") from None
    except UnidentifiedImageError:
        raise BadImage(f"{name} is not an image file; upload a PNG or JPEG") from None
    except (OSError, SyntaxError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BadImage(f"{name} cannot be decoded ({reason[:120]}); upload a PNG or "
                       "JPEG") from None
    return pixels, notes


def check_size(name, width, height):
    if min(width, height) < MIN_SIDE:
        raise BadImage(f"{name} is {width}x{height} pixels; the demo needs at least "
                       f"{MIN_SIDE}x{MIN_SIDE} to show anything recognisable")


def conversion_notes(image):
    """What the page should say about turning this image into the model's RGB input."""
    notes = []
    bands = image.getbands()
    if len(set(bands) - {"A"}) == 1 and image.mode != "P":
        notes.append("greyscale image: its one channel is used for red, green and blue "
                     "(the model was trained on colour images)")
    if "A" in bands or "transparency" in image.info:
        notes.append("transparency dropped: the colours under transparent pixels are used")
    return notes


def classify(served, pixels):
    """uint8 RGB pixels (any size) -> {"top5": {class: probability} (best first),
    "predicted_class", "probability", "inference_ms", "overlay" (uint8 224x224x3),
    "method"}.

    inference_ms is the model's forward pass for this one image (predict_on_batch, output
    copied to numpy so the device is synced), as in kerasvit.evaluate's latency; resizing
    and the explanation are not included."""
    batch = stream.prepare_images(np.asarray(pixels)[None], served.input_size)
    with served.lock:
        start = time.perf_counter()
        logits = np.asarray(served.model.predict_on_batch(batch), dtype=np.float32)
        inference_ms = 1000 * (time.perf_counter() - start)
        explanation = explanations.explain_image(served.model, pixels, served.name)
    probabilities = classification.softmax(logits)[0]
    order = np.argsort(-probabilities, kind="stable")[:TOP_K]
    top = {CLASS_NAMES[i]: float(probabilities[i]) for i in order}
    return {"top5": top, "predicted_class": CLASS_NAMES[order[0]],
            "probability": float(probabilities[order[0]]), "inference_ms": inference_ms,
            "overlay": explanation["overlay"], "method": explanation["method"]}


def classify_file(served, path):
    """classify() for an uploaded file, plus "pixels" and "notes"; for a file it cannot
    classify, {"message": why} instead (never raises for bad input)."""
    try:
        pixels, notes = read_upload(path)
    except BadImage as error:
        return {"message": str(error)}
    height, width = pixels.shape[:2]
    if (height, width) != served.input_size:
        notes.append(f"resized from {width}x{height} to the model's "
                     f"{served.input_size[1]}x{served.input_size[0]} input")
    result = classify(served, pixels)
    result.update(pixels=pixels, notes=notes)
    return result


def warm_up(served):
    """One prediction and explanation before serving: the first call traces/compiles on
    every backend, and must not be the time the first user sees."""
    rng = np.random.default_rng(0)
    classify(served, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))


def median_inference_ms(served, pixels, repeats=20):
    """Median of `repeats` classify() timings of one image (after warm-up)."""
    warm_up(served)
    return float(np.median([classify(served, pixels)["inference_ms"] for _ in range(repeats)]))
