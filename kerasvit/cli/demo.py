"""A Gradio page that classifies an uploaded image: top-5 classes, the inference time of that
prediction and the explanation overlay (attention rollout for ViTs, Grad-CAM for the CNN).

    KERAS_BACKEND=jax python -m kerasvit.demo runs/<run>                # http://127.0.0.1:7860
    python -m kerasvit.demo runs/<run> --host 0.0.0.0 --port 8080      # only when asked

Upload any PNG/JPEG/... or click one of the CIFAR-10 test images (one per class). The page
names the model, backend and run it serves, with the run's test accuracy. Bad uploads (not
an image, too small, too large) get a message in the page; the server keeps running.

`classify` and `classify_file` are the page's logic without Gradio (the tests call them);
gradio is imported only to build and serve the page (`pip install -e .[demo]`).
"""

import dataclasses
import os
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np

from kerasvit import CLASS_NAMES, cli
from kerasvit.errors import UserError

PROG = "kerasvit.demo"
DEFAULT_HOST = "127.0.0.1"  # this machine only; other addresses only when asked with --host
DEFAULT_PORT = 7860
TOP_K = 5
# Below this an image holds nothing recognisable once stretched to the model's input.
MIN_SIDE = 8
# Checked on the header, before decoding: a small PNG can claim 20000x20000 pixels (1.2 GB
# of RGB); 25 megapixels (~75 MB decoded) covers any camera photo.
MAX_PIXELS = 25_000_000
MAX_UPLOAD = "25mb"  # Gradio refuses larger files before they reach us.
DISPLAY_SIDE = 320  # the uploaded image is shown at most this large
EXAMPLE_SIDE = 96  # gallery thumbnails: 32x32 upscaled, pixels kept sharp
EXAMPLE_POOL = 200  # the first test images, which hold every class
METHOD_TITLES = {"gradcam": "Grad-CAM", "attention": "attention rollout"}


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
        return tuple(int(s) for s in self.model.input_shape[1:3])


# ---------------------------------------------------------------- model and examples

def load_served_model(path, backend, unsafe_load=False):
    from kerasvit.explain import explanations
    from kerasvit.runs import loading

    model, config, run_dir = loading.load_run(path, unsafe_load)
    name = loading.model_name(model, config)
    explanations.explain_method(name)  # refuses a model the page cannot explain, before serving
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
    import tensorflow_datasets as tfds

    from kerasvit.data import cifar

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


# ---------------------------------------------------------------- reading uploads

def read_upload(path):
    """An uploaded file -> (uint8 RGB pixels, notes on what was converted). Raises BadImage
    with a message for the page when the file cannot or should not be classified."""
    from PIL import Image, UnidentifiedImageError

    name = Path(path).name
    try:
        with Image.open(path) as image:
            check_size(name, *image.size)  # the header only: nothing decoded yet
            image.load()
            notes = conversion_notes(image)
            # convert("RGB") drops alpha without compositing, as kerasvit.predict does.
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except BadImage:
        raise
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
    if width * height > MAX_PIXELS:
        raise BadImage(f"{name} is {width}x{height} pixels ({width * height / 1e6:.0f} "
                       f"megapixels); the demo takes up to {MAX_PIXELS / 1e6:.0f} megapixels, "
                       "please resize it")


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


# ---------------------------------------------------------------- prediction

def classify(served, pixels):
    """uint8 RGB pixels (any size) -> {"top5": {class: probability} (best first),
    "predicted_class", "probability", "inference_ms", "overlay" (uint8 224x224x3),
    "method"}.

    inference_ms is the model's forward pass for this one image (predict_on_batch, output
    copied to numpy so the device is synced), as in kerasvit.evaluate's latency; resizing
    and the explanation are not included."""
    from kerasvit.data import stream
    from kerasvit.evaluation import classification
    from kerasvit.explain import explanations

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


# ---------------------------------------------------------------- page text

def header_markdown(served):
    accuracy = ("unknown (no metrics.json)" if served.test_accuracy is None
                else f"{100 * served.test_accuracy:.2f}%")
    return (f"# kerasvit demo: CIFAR-10 classifier\n"
            f"**Model** `{served.name}` · **backend** `{served.backend}` · "
            f"**run** `{served.source}` · **test accuracy** {accuracy}")


def method_title(served):
    from kerasvit.explain.explanations import explain_method

    return METHOD_TITLES[explain_method(served.name)]


def result_markdown(result, source, backend):
    method = METHOD_TITLES[result["method"]]
    lines = [f"**{result['predicted_class']}** ({100 * result['probability']:.1f}%) for {source}",
             f"Inference time: **{result['inference_ms']:.1f} ms** (one image, model forward "
             f"pass on {backend}); overlay: {method}."]
    lines += [f"Note: {note}." for note in result.get("notes", ())]
    return "\n\n".join(lines)


def message_markdown(message):
    return f"**Cannot classify this upload:** {message}."


def display_image(pixels):
    """The image as the page shows it: small ones enlarged with sharp pixels, large ones
    shrunk (a 25-megapixel photo is not sent back to the browser)."""
    from PIL import Image

    image = Image.fromarray(pixels)
    scale = DISPLAY_SIDE / max(image.size)
    size = tuple(max(1, round(side * scale)) for side in image.size)
    resample = Image.NEAREST if scale > 1 else Image.BILINEAR
    return np.asarray(image.resize(size, resample))


# ---------------------------------------------------------------- the page

def page_outputs(served, result, source):
    """(input image, top-5 label, overlay, text) for the page's output components."""
    if "message" in result:
        return None, None, None, message_markdown(result["message"])
    return (display_image(result["pixels"]), result["top5"], result["overlay"],
            result_markdown(result, source, served.backend))


def handle_upload(served, path):
    if path is None:  # the upload was cleared
        return None, None, None, ""
    return guarded(lambda: page_outputs(served, classify_file(served, path), Path(path).name))


def handle_example(served, example):
    pixels, class_name = example

    def run():
        result = classify(served, pixels)
        result.update(pixels=pixels, notes=[])
        return page_outputs(served, result, f"the CIFAR-10 test image of class {class_name}")
    return guarded(run)


def guarded(handler):
    """Runs a page handler; a bug shows as a message in the page (trace in the server log)
    instead of Gradio's bare "Error", and the server keeps serving."""
    try:
        return handler()
    except Exception as error:
        traceback.print_exc()
        return None, None, None, message_markdown(
            f"prediction failed ({type(error).__name__}: {str(error)[:200]}); "
            "see the server log")


def build_page(served, examples):
    import gradio as gr

    with gr.Blocks(title=f"kerasvit demo: {served.name}") as page:
        gr.Markdown(header_markdown(served), elem_id="header")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Upload an image (PNG, JPEG, ...)", type="filepath",
                                 elem_id="upload")
                gallery = gr.Gallery(
                    value=[(enlarge(pixels, EXAMPLE_SIDE), name) for pixels, name in examples],
                    label="Or click an example: one CIFAR-10 test image per class",
                    columns=5, height=260, allow_preview=False, interactive=False,
                    visible=bool(examples), elem_id="examples")
                shown = gr.Image(label="Image", interactive=False, elem_id="image")
            with gr.Column():
                message = gr.Markdown(elem_id="result")
                top5 = gr.Label(label=f"Top-{TOP_K} classes", num_top_classes=TOP_K,
                                elem_id="top5")
                overlay = gr.Image(label=f"What the model looked at: {method_title(served)}",
                                   interactive=False, elem_id="overlay")
        outputs = [shown, top5, overlay, message]
        upload.upload(lambda path: handle_upload(served, path), upload, outputs)

        def on_example(event: gr.SelectData):
            return handle_example(served, examples[event.index])

        gallery.select(on_example, None, outputs)
    return page


def enlarge(pixels, side):
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((side, side), Image.NEAREST))


# ---------------------------------------------------------------- CLI

def parse_args(argv=None):
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("model", metavar="RUN_OR_KERAS", help="run folder or .keras file")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on (default 127.0.0.1: this machine only; "
                             "0.0.0.0 opens the demo to the network)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on (default {DEFAULT_PORT})")
    cli.add_unsafe_load_flag(parser)
    return parser.parse_args(argv)


def check_args(args):
    """Refuses bad input before the slow framework imports."""
    from kerasvit.runs import loading

    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must be between 1 and 65535, got {args.port}")
    if not args.host.strip():
        raise UserError("--host must not be empty")
    loading.check_model_file(args.model, args.unsafe_load)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("gradio is not installed; install the demo extra: "
                        "pip install -e '.[demo]'") from None


def main(argv=None):
    args = parse_args(argv)
    backend = cli.check_backend(PROG)
    # Gradio would otherwise phone home at start-up (analytics, version check).
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        check_args(args)
        cli.import_tensorflow_quietly()
        served = load_served_model(args.model, backend, args.unsafe_load)
        examples = gallery_examples()
    except UserError as error:  # bad flag, run or model: one line, no traceback
        cli.fail(PROG, str(error))
    warm_up(served)
    serve(build_page(served, examples), served, args.host, args.port)


def serve(page, served, host, port):
    try:
        page.queue().launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD,
                            prevent_thread_lock=True, quiet=True, show_error=True)
    except OSError as error:  # port taken, or an address this machine does not have
        cli.fail(PROG, f"cannot listen on {host}:{port} ({str(error).splitlines()[0]}); "
                       "choose another --port or --host")
    print(f"{PROG}: serving {served.name} from {served.source} on {served.backend} at "
          f"http://{host}:{port} (Ctrl-C to stop)", flush=True)
    page.block_thread()  # until Ctrl-C, which Gradio turns into a clean shutdown


if __name__ == "__main__":
    sys.exit(main())
