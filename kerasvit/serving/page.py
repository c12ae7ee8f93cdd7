"""The demo's Gradio page: the header naming the model, backend and run, an upload box and
a gallery of CIFAR-10 test images, and for each prediction the top-5 classes, the inference
time and what the model looked at. Gradio is imported only to build the page
(`pip install -e .[demo]`); a handler that fails shows a message, and the server keeps
serving.
"""

import traceback
from pathlib import Path

import numpy as np
from PIL import Image

from kerasvit.explain.explanations import explain_method
from kerasvit.serving.classifier import TOP_K, classify, classify_file

DISPLAY_SIDE = 320  # the uploaded image is shown at most this large
EXAMPLE_SIDE = 96  # gallery thumbnails: 32x32 upscaled, pixels kept sharp
METHOD_TITLES = {"gradcam": "Grad-CAM", "attention": "attention rollout"}


def header_markdown(served):
    accuracy = ("unknown (no metrics.json)" if served.test_accuracy is None
                else f"{100 * served.test_accuracy:.2f}%")
    return (f"# kerasvit demo: CIFAR-10 classifier\n"
            f"**Model** `{served.name}` · **backend** `{served.backend}` · "
            f"**run** `{served.source}` · **test accuracy** {accuracy}")


def method_title(served):
    return METHOD_TITLES[explain_method(served.name, served.model)]


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
    image = Image.fromarray(pixels)
    scale = DISPLAY_SIDE / max(image.size)
    size = tuple(max(1, round(side * scale)) for side in image.size)
    resample = Image.NEAREST if scale > 1 else Image.BILINEAR
    return np.asarray(image.resize(size, resample))


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
    return np.asarray(Image.fromarray(pixels).resize((side, side), Image.NEAREST))
