"""Show what a trained model looks at: attention maps for ViTs, Grad-CAM for the CNN.

    KERAS_BACKEND=jax python -m kerasvit.explain runs/<vit run> --num-images 8
    KERAS_BACKEND=torch python -m kerasvit.explain runs/<cnn run> --images cat.png dog.jpg

ViT (`vit`, `vit_b16`): the class token's attention per layer (averaged over heads) and the
attention rollout across layers (see `kerasvit.attention`). CNN: Grad-CAM on the last
convolutional block, for the predicted class or `--class NAME`. Writes one PNG per image
(under explain/) and an `explain.md` index, in the run folder or `--out DIR`.

The function API (`explain_batch`, `explain_image`) works on any loaded model.
"""

from pathlib import Path

from kerasvit import CLASS_NAMES, cli
from kerasvit.errors import UserError

PROG = "kerasvit.explain"
DEFAULT_NUM_IMAGES = 8
# Candidates for the default sample: a seeded draw from the test set, large enough to
# hold both correct and wrong predictions of any reasonable model.
POOL_PER_IMAGE = 8
SAMPLE_SEED = 0
BATCH_SIZE = 16
OVERLAY_ALPHA = 0.45
COLORMAP = "jet"


class ExplainError(UserError, RuntimeError):
    """Bad input for explain; the message is shown to the user as one line."""


# ---------------------------------------------------------------- maps (function API)

def explain_method(model_name):
    from kerasvit.models import MODEL_NAMES, get_spec

    if model_name not in MODEL_NAMES:
        raise ExplainError(f"cannot tell which kerasvit model this is (name {model_name!r}); "
                           f"explain works for {', '.join(MODEL_NAMES)}")
    return get_spec(model_name).explain_method


def input_size(model):
    return tuple(int(s) for s in model.input_shape[1:3])


def predict_logits(model, images):
    # predict(), not model(images): keras-hub's classifier applies its preprocessor there.
    return model.predict(images, batch_size=BATCH_SIZE, verbose=0)


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


def attention_maps(model, model_name, images):
    """{"rollout": (batch, rows, cols), "layers": (batch, layers, rows, cols)}."""
    from kerasvit import attention

    scores = attention.attention_scores(model, model_name, images)
    grid = attention.patch_grid_shape(scores, images.shape[1:3])
    return {"rollout": attention.rollout_maps(scores, grid),
            "layers": attention.class_token_maps(scores, grid)}


def explain_batch(model, model_name, images, class_index=None):
    """Maps for a batch of images (float, [0, 255], at the model's input size).

    Returns {"method", "probabilities", "predicted", "explained" (Grad-CAM's class per
    image, else None) and the maps: "gradcam" or "rollout" + "layers"} as numpy arrays.
    """
    import numpy as np

    from kerasvit.models.cnn import last_conv_layer_name

    method = explain_method(model_name)
    images = np.asarray(images, dtype="float32")
    logits = predict_logits(model, images)
    result = {"method": method, "probabilities": softmax(logits),
              "predicted": logits.argmax(axis=-1), "explained": None}
    if method == "gradcam":
        explained = result["predicted"] if class_index is None else np.full(len(images), class_index)
        result["explained"] = explained
        result["gradcam"] = grad_cam(model, images, explained, last_conv_layer_name(model))
    else:
        result.update(attention_maps(model, model_name, images))
    return result


def explain_image(model, image, model_name, class_name=None, display_size=224):
    """One image (HxWx3, uint8 or float in [0, 255], any size) -> {"overlay": uint8
    display_size x display_size x 3 heat map over the image, "heatmap": the map on its grid
    scaled to [0, 1], "predicted_class", "probability", "explained_class" (Grad-CAM only),
    "method"}. For the demo."""
    from kerasvit import data

    import numpy as np

    class_index = class_index_of(class_name) if class_name else None
    image = np.asarray(image)
    if image.ndim == 2:  # greyscale
        image = np.repeat(image[..., None], 3, axis=-1)
    images = data.prepare_images(image[None, ..., :3], input_size(model))
    result = explain_batch(model, model_name, images, class_index)
    heat = headline_map(result, 0)
    predicted = int(result["predicted"][0])
    explained = result["explained"]
    return {
        "overlay": overlay(images[0], heat, display_size),
        "heatmap": normalise(heat),
        "predicted_class": CLASS_NAMES[predicted],
        "probability": float(result["probabilities"][0, predicted]),
        "explained_class": None if explained is None else CLASS_NAMES[int(explained[0])],
        "method": result["method"],
    }


def headline_map(result, index):
    """The one map that sums up image `index`: Grad-CAM, or the attention rollout."""
    return result["gradcam" if result["method"] == "gradcam" else "rollout"][index]


def softmax(logits):
    import numpy as np

    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def class_index_of(class_name):
    if class_name not in CLASS_NAMES:
        raise ExplainError(f"unknown class {class_name!r}; choose one of {', '.join(CLASS_NAMES)}")
    return CLASS_NAMES.index(class_name)


# ---------------------------------------------------------------- drawing

def normalise(heat):
    import numpy as np

    heat = np.asarray(heat, dtype="float32")
    spread = heat.max() - heat.min()
    return (heat - heat.min()) / spread if spread > 0 else np.zeros_like(heat)


def resize(array, size):
    """Bilinear resize of an HxW float map or HxWx3 image with PIL (no framework)."""
    import numpy as np
    from PIL import Image

    if array.ndim == 2:
        return np.asarray(Image.fromarray(array.astype("float32"), mode="F")
                          .resize((size, size), Image.BILINEAR))
    image = Image.fromarray(array.clip(0, 255).astype("uint8"))
    return np.asarray(image.resize((size, size), Image.BILINEAR)).astype("float32")


def overlay(image, heat, size):
    """The heat map (any grid) upsampled and coloured over the image, as uint8 size x size x 3."""
    import matplotlib

    colours = matplotlib.colormaps[COLORMAP](normalise(resize(normalise(heat), size)))[..., :3]
    blended = (1 - OVERLAY_ALPHA) * resize(image, size) + OVERLAY_ALPHA * 255 * colours
    return blended.clip(0, 255).astype("uint8")


def save_figure(path, image, result, index, title, size=224):
    """One PNG: the image, its headline overlay, the raw map, and (ViT) every layer's map."""
    from matplotlib.figure import Figure

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
    heat = headline_map(result, index)
    panels = [(resize(image, size).astype("uint8"), "image"),
              (overlay(image, heat, size), f"{name} overlay"),
              (normalise(heat), f"{name} ({heat.shape[0]}x{heat.shape[1]} grid)")]
    draw_row(top, panels, 3)
    if bottom is not None:
        layer_panels = [(overlay(image, layers[index, i], size), f"layer {i + 1}")
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
        axis.imshow(picture, cmap=COLORMAP if picture.ndim == 2 else None,
                    interpolation="nearest")
        axis.set_title(label, fontsize=8)


# ---------------------------------------------------------------- images to explain

def test_sample(model, num_images):
    """A fixed sample of the test set, about half correct and half wrong predictions.
    Returns (images at the model's input size, labels, test-set indices)."""
    import numpy as np

    from kerasvit import data

    images, labels = data.load_cifar10(data.resolve_data_dir())["test"]
    pool = np.random.default_rng(SAMPLE_SEED).permutation(len(labels))
    pool = pool[:min(len(labels), max(POOL_PER_IMAGE * num_images, 32))]
    pool_images = data.prepare_images(images[pool], input_size(model))
    correct = predict_logits(model, pool_images).argmax(axis=-1) == labels[pool]
    num_wrong = min((~correct).sum(), num_images // 2)
    num_correct = min(correct.sum(), num_images - num_wrong)
    num_wrong = min((~correct).sum(), num_images - num_correct)
    chosen = np.sort(np.concatenate([np.flatnonzero(correct)[:num_correct],
                                     np.flatnonzero(~correct)[:num_wrong]]))
    return pool_images[chosen], labels[pool][chosen], pool[chosen]


def read_image_files(paths, model):
    """User image files -> float32 images at the model's input size."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from kerasvit import data

    loaded = []
    for path in paths:
        try:
            with Image.open(path) as image:
                loaded.append(data.prepare_images(
                    np.asarray(image.convert("RGB"))[None], input_size(model))[0])
        except (UnidentifiedImageError, OSError) as error:
            raise ExplainError(f"cannot read image {path} ({type(error).__name__}); "
                               "pass PNG or JPEG files") from None
    return np.stack(loaded)


# ---------------------------------------------------------------- CLI

def parse_args(argv=None):
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("model", metavar="RUN_OR_KERAS", help="run folder or .keras file")
    parser.add_argument("--num-images", type=int, default=DEFAULT_NUM_IMAGES,
                        help="test images to explain when --images is not given (default 8)")
    parser.add_argument("--images", nargs="+", metavar="FILE", help="image files to explain")
    parser.add_argument("--class", dest="class_name", metavar="NAME",
                        help=f"Grad-CAM for this class instead of the predicted one: "
                             f"{', '.join(CLASS_NAMES)}")
    parser.add_argument("--out", help="output folder (default: the run folder)")
    cli.add_unsafe_load_flag(parser)
    return parser.parse_args(argv)


def check_args(args):
    """Refuses bad input before the slow framework imports."""
    if args.num_images <= 0:
        raise ExplainError(f"--num-images must be positive, got {args.num_images}")
    if args.class_name is not None:
        class_index_of(args.class_name)
    for path in args.images or ():
        if not Path(path).is_file():
            raise ExplainError(f"image file {path} does not exist")


def main(argv=None):
    args = parse_args(argv)
    cli.check_backend(PROG)
    try:
        check_args(args)
        cli.import_tensorflow_quietly()
        return run(args)
    except UserError as error:  # bad flag, file, model or data: one line, no traceback
        cli.fail(PROG, str(error))


def run(args):
    from kerasvit import loading

    model, config, run_dir = loading.load_run(args.model, args.unsafe_load)
    model_name = loading.model_name(model, config)
    if args.class_name and explain_method(model_name) != "gradcam":
        raise ExplainError("--class applies to Grad-CAM (cnn) only: attention maps do not "
                           "depend on a class")
    out_dir = output_folder(args, run_dir)
    if args.images:
        images = read_image_files(args.images, model)
        labels, sources = [None] * len(images), [Path(p).name for p in args.images]
    else:
        images, labels, indices = test_sample(model, args.num_images)
        sources = [f"test image {i}" for i in indices]
    class_index = class_index_of(args.class_name) if args.class_name else None
    entries = explain_and_draw(model, model_name, images, labels, sources, class_index, out_dir)
    index_path = write_index(out_dir, entries, model_name, args.model)
    print(f"wrote {len(entries)} figures and {index_path}")
    return index_path


def output_folder(args, run_dir):
    from kerasvit.loading import resolve_model_path

    out_dir = Path(args.out) if args.out else run_dir or resolve_model_path(args.model)[0].parent
    try:
        (out_dir / "explain").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExplainError(f"cannot create {out_dir / 'explain'} ({error.strerror}); "
                           "choose a writable --out") from None
    return out_dir


def explain_and_draw(model, model_name, images, labels, sources, class_index, out_dir):
    """Explains the images in batches and saves one figure each; returns index entries."""
    entries = []
    for start in range(0, len(images), BATCH_SIZE):
        result = explain_batch(model, model_name, images[start:start + BATCH_SIZE], class_index)
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


def write_index(out_dir, entries, model_name, model_path):
    import keras

    method = explain_method(model_name)
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


if __name__ == "__main__":
    main()
