"""What `python -m kerasvit.explain` writes: a fixed test sample (or the user's image files),
one figure per image (the image, the headline overlay, the raw map and, for ViTs, every
layer's map) and an explain.md index."""

from pathlib import Path

import keras
import numpy as np
from matplotlib.figure import Figure
from PIL import UnidentifiedImageError

from kerasvit import CLASS_NAMES
from kerasvit.data import cifar, stream
from kerasvit.data.images import MAX_PIXELS, TooManyPixels, open_image
from kerasvit.explain import explanations, overlays

# Candidates for the default sample: a seeded draw from the test set, large enough to
# hold both correct and wrong predictions of any reasonable model.
POOL_PER_IMAGE = 8
SAMPLE_SEED = 0


def save_figure(path, image, result, index, title, size=224):
    """One PNG: the image, its headline overlay, the raw map, and (ViT) every layer's map."""
    layers = result.get("layers")
    num_layers = 0 if layers is None else layers.shape[1]
    columns = min(max(num_layers, 3), 6)
    layer_rows = -(-num_layers // columns)
    figure = Figure(figsize=(2.2 * columns, 2.6 * (1 + layer_rows * 0.85) + 0.4),
                    layout="constrained")
    figure.suptitle(title, fontsize=10)
    top, bottom = (figure.subfigures(2, 1, height_ratios=[1, 0.85 * layer_rows])
                   if layer_rows else (figure, None))
    name = "Grad-CAM" if result["method"] == "gradcam" else "attention rollout"
    heat = explanations.headline_map(result, index)
    panels = [(overlays.resize(image, size).astype("uint8"), "image"),
              (overlays.overlay(image, heat, size), f"{name} overlay"),
              (overlays.normalise(heat), f"{name} ({heat.shape[0]}x{heat.shape[1]} grid)")]
    draw_row(top, panels, 3)
    if bottom is not None:
        layer_panels = [(overlays.overlay(image, layers[index, i], size), f"layer {i + 1}")
                        for i in range(num_layers)]
        bottom.suptitle("class-token attention per layer (each scaled to its own range)",
                        fontsize=9)
        draw_row(bottom, layer_panels, columns)
    figure.savefig(path, dpi=100)



def draw_row(figure, panels, columns):
    rows = -(-len(panels) // columns)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis in axes:
        axis.set_axis_off()
    for axis, (picture, label) in zip(axes, panels):
        axis.imshow(picture, cmap=overlays.COLORMAP if picture.ndim == 2 else None,
                    interpolation="nearest")
        axis.set_title(label, fontsize=8)



def test_sample(model, num_images):
    """A fixed sample of the test set, about half correct and half wrong predictions.
    Returns (images at the model's input size, labels, test-set indices)."""
    images, labels = cifar.load_cifar10(cifar.resolve_data_dir())["test"]
    pool = np.random.default_rng(SAMPLE_SEED).permutation(len(labels))
    pool = pool[:min(len(labels), max(POOL_PER_IMAGE * num_images, 32))]
    pool_images = stream.prepare_images(images[pool], explanations.input_size(model))
    correct = explanations.predict_logits(model, pool_images).argmax(axis=-1) == labels[pool]
    num_wrong = min((~correct).sum(), num_images // 2)
    num_correct = min(correct.sum(), num_images - num_wrong)
    num_wrong = min((~correct).sum(), num_images - num_correct)
    chosen = np.sort(np.concatenate([np.flatnonzero(correct)[:num_correct],
                                     np.flatnonzero(~correct)[:num_wrong]]))
    return pool_images[chosen], labels[pool][chosen], pool[chosen]



def read_image_files(paths, model):
    """User image files -> float32 images at the model's input size."""
    loaded = []
    for path in paths:
        try:
            with open_image(path) as image:
                loaded.append(stream.prepare_images(
                    np.asarray(image.convert("RGB"))[None], explanations.input_size(model))[0])
        except TooManyPixels as error:
            raise explanations.ExplainError(
                f"image {path} is {error} ({error.megapixels:.0f} megapixels); explain takes "
                f"up to {MAX_PIXELS / 1e6:.0f} megapixels, resize it first") from None
        except (UnidentifiedImageError, OSError) as error:
            raise explanations.ExplainError(f"cannot read image {path} ({type(error).__name__}); "
                               "pass PNG or JPEG files") from None
    return np.stack(loaded)



def explain_and_draw(model, model_name, images, labels, sources, class_index, out_dir):
    """Explains the images in batches and saves one figure each; returns index entries."""
    entries = []
    for start in range(0, len(images), explanations.BATCH_SIZE):
        result = explanations.explain_batch(model, model_name, images[start:start + explanations.BATCH_SIZE], class_index)
        for offset in range(len(result["predicted"])):
            number = start + offset
            entry = describe(result, offset, labels[number], sources[number])
            entry["figure"] = f"explain/{number + 1:02d}-{slug(entry)}.png"
            save_figure(out_dir / entry["figure"], images[number], result, offset, entry["title"])
            entries.append(entry)
    return entries



def describe(result, index, label, source):
    predicted = int(result["predicted"][index])
    entry = {
        "source": source,
        "true": None if label is None else CLASS_NAMES[int(label)],
        "predicted": CLASS_NAMES[predicted],
        "probability": float(result["probabilities"][index, predicted]),
        "explained": (None if result["explained"] is None
                      else CLASS_NAMES[int(result["explained"][index])]),
    }
    parts = [source]
    if entry["true"]:
        parts.append(f"true {entry['true']}")
    parts.append(f"predicted {entry['predicted']} ({entry['probability']:.2f})")
    if entry["explained"]:
        parts.append(f"Grad-CAM for {entry['explained']}")
    entry["title"] = " | ".join(parts)
    return entry



def slug(entry):
    stem = entry["source"].replace("test image ", "test")
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(stem).stem)
    return f"{stem}-pred-{entry['predicted']}"



def write_index(out_dir, entries, model_name, model_path, model=None):
    method = explanations.explain_method(model_name, model)
    how_to_read = {
        "gradcam": "Grad-CAM on the last convolutional block: red regions raise the "
                   "explained class's score most.",
        "attention": "Attention rollout of the class token across all layers (overlay), "
                     "then each layer's class-token attention averaged over heads; red "
                     "patches are attended most.",
    }[method]
    lines = [f"# Explanations: {model_name} ({Path(model_path)})", "",
             f"Backend {keras.backend.backend()}. {how_to_read}", "",
             "| # | image | true | predicted (p) | figure |", "|---|---|---|---|---|"]
    for number, entry in enumerate(entries, start=1):
        true = entry["true"] or "-"
        mark = "" if entry["true"] is None else (" ✓" if entry["true"] == entry["predicted"] else " ✗")
        lines.append(f"| {number} | {entry['source']} | {true} | {entry['predicted']} "
                     f"({entry['probability']:.2f}){mark} | [{entry['figure']}]({entry['figure']}) |")
    lines.append("")
    for number, entry in enumerate(entries, start=1):
        lines += [f"## {number}. {entry['title']}", "", f"![{entry['title']}]({entry['figure']})", ""]
    path = out_dir / "explain.md"
    path.write_text("\n".join(lines))
    return path
