"""Classify image files with a trained model, on whichever backend KERAS_BACKEND names.

    KERAS_BACKEND=tensorflow python -m kerasvit.predict --model runs/<run>/model.keras cat.png plane.jpg
    python -m kerasvit.predict --model runs/<run> --top-k 3 --json photos/*.jpg

PNG or JPEG (also BMP, GIF, WebP) of any size up to 25 megapixels, RGB, RGBA or greyscale:
converted to RGB and resized to the model's input exactly as in evaluation
(`kerasvit.data.stream.prepare_images`). A file that cannot be read as an image gets one error line;
the others are still predicted (exit code 1 in that case).
"""

import json
import sys
import warnings

import numpy as np

from kerasvit import CLASS_NAMES, cli, models
from kerasvit.data import images as image_files
from kerasvit.errors import UserError

PROG = "kerasvit.predict"


class ImageError(UserError, ValueError):
    """A file that cannot be classified; the message (one line) names the file and why."""


def parse_args(argv=None):
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, metavar="RUN_OR_KERAS_FILE",
                        help="a kerasvit run folder or a .keras file (saved under any backend)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files")
    parser.add_argument("--top-k", type=int, default=5, help="classes to show per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    cli.add_unsafe_load_flag(parser)
    return parser.parse_args(argv)


def read_image(path):
    """An image file -> (uint8 RGB array (H, W, 3), description). Raises ImageError with a
    one-line reason when the file is missing, too large or not an image we decode."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # PIL's warnings on odd files (corrupt EXIF, ...) would be stray stderr lines;
            # its decompression-bomb warning (above 89 megapixels) becomes our refusal.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with image_files.open_image(path) as image:  # the header is checked first
                image.load()
                mode, size = image.mode, image.size
                # convert("RGB") drops alpha by discarding it (not compositing); CIFAR has
                # no transparency, so there is no better background to assume.
                pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except image_files.TooManyPixels as error:
        raise ImageError(f"{path}: is {error.width}x{error.height} pixels "
                         f"({error.megapixels:.0f} megapixels); the limit is "
                         f"{image_files.MAX_PIXELS / 1e6:.0f} megapixels (decompression bombs), "
                         "resize it first") from None
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, not an image file; pass the image files "
                         "themselves") from None
    except PermissionError:
        raise ImageError(f"{path}: cannot be read (permission denied)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path}: has over {image_files.MAX_PIXELS / 1e6:.0f} megapixels (a possible "
                         "decompression bomb); resize it first") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (or an unsupported format); expected "
                         "a PNG or JPEG") from None
    except Exception as error:  # noqa: BLE001  PIL's decoders raise many types on bad data
        reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise ImageError(f"{path}: cannot be decoded ({reason}); expected a PNG or JPEG"
                         ) from None
    if min(pixels.shape[:2]) == 0:
        raise ImageError(f"{path}: has no pixels ({size[0]}x{size[1]})")
    return pixels, f"{size[0]}x{size[1]} {mode}"


def read_images(paths):
    """Reads every file; returns ([(path, pixels, description)], [error lines])."""
    images, errors = [], []
    for path in paths:
        try:
            pixels, description = read_image(path)
            images.append((path, pixels, description))
        except ImageError as error:
            errors.append(str(error))
    return images, errors


def predict_probabilities(model, pixel_arrays):
    """Softmax probabilities for uint8 RGB arrays of any sizes (one row per image)."""
    from kerasvit.data import stream
    from kerasvit.evaluation import classification

    sizes = {pixels.shape[:2] for pixels in pixel_arrays}
    # One batch needs one size: images that share theirs go in as they are where the model
    # resizes them itself (kerasvit.models.feed_size); mixed sizes are resized here first.
    image_size = (models.feed_size(model, sizes.pop()) if len(sizes) == 1
                  else models.image_size(model))
    batch = np.concatenate([stream.prepare_images(pixels[None], image_size)
                            for pixels in pixel_arrays])
    return classification.softmax(model.predict(batch, verbose=0))


def top_k(probabilities, k):
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [{"class": CLASS_NAMES[i], "probability": float(probabilities[i])} for i in order]


def format_table(results):
    lines = []
    for result in results:
        lines.append(f"{result['file']}  ({result['image']})")
        for rank, entry in enumerate(result["predictions"], start=1):
            lines.append(f"  {rank}. {entry['class']:<11} {100 * entry['probability']:6.2f}%")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if not 1 <= args.top_k <= len(CLASS_NAMES):
        cli.fail(PROG, f"--top-k must be between 1 and {len(CLASS_NAMES)}, got {args.top_k}")
    backend = cli.check_backend(PROG)
    # Files are read before the model is loaded: a typo in a path is reported in a second,
    # not after the framework start-up.
    images, errors = read_images(args.images)
    if not images and len(errors) == 1:
        cli.fail(PROG, f"none of the files could be read as an image: {errors[0]}")
    for error in errors:
        print(f"{PROG}: error: {error}", file=sys.stderr)
    if not images:
        cli.fail(PROG, "none of the files could be read as an image")

    from kerasvit.runs.loading import LoadError, check_model_file, load_model

    try:
        check_model_file(args.model, args.unsafe_load)  # before the slow imports
        cli.import_tensorflow_quietly()
        model = load_model(args.model, args.unsafe_load)
    except LoadError as error:
        cli.fail(PROG, str(error))
    probabilities = predict_probabilities(model, [pixels for _, pixels, _ in images])
    results = [
        {"file": path, "image": description, "predictions": top_k(row, args.top_k)}
        for (path, _, description), row in zip(images, probabilities)
    ]
    if args.json:
        print(json.dumps({"model": args.model, "backend": backend, "results": results,
                          "errors": errors}, indent=2))
    else:
        print(format_table(results))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
