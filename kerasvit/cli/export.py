"""Export a trained model for serving (TensorFlow SavedModel or ONNX) on whichever backend
KERAS_BACKEND names, and check the artifact against the .keras model.

    python -m kerasvit.export runs/cnn-tensorflow-20261201-101500 --format saved_model
    KERAS_BACKEND=torch python -m kerasvit.export path/to/model.keras --format onnx --out serving/cnn

Writes a new folder (default: <run>/export_<format>, or <file>_<format>/ beside a lone .keras
file; an existing one is never overwritten) holding saved_model/ or model.onnx and
export.json: the artifact run by its own runtime (TensorFlow, onnxruntime) against the .keras
model on CIFAR-10 test images (largest probability difference, top-1 agreement), its size
and its latency at batch 1 and 256."""

import sys

from kerasvit import cli
from kerasvit.data import cifar
from kerasvit.errors import UserError
from kerasvit.runs import folders, loading
from kerasvit.serving import export

PROG = "kerasvit.export"


def parse_args(argv=None):
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("model", metavar="RUN_OR_KERAS_FILE",
                        help="a kerasvit run folder or a .keras file (saved under any backend)")
    parser.add_argument("--format", required=True, choices=export.FORMATS,
                        help="saved_model (TF Serving, TFLite) or onnx (onnxruntime, TensorRT)")
    parser.add_argument("--out", help="new output folder (default: <run>/export_<format>, or "
                                      "<file>_<format>/ beside a lone .keras file)")
    parser.add_argument("--test-images", type=int, default=1000, metavar="N",
                        help="CIFAR-10 test images for the parity check (default 1000)")
    parser.add_argument("--timing-repeats", type=int, default=10, metavar="N",
                        help="timed calls per batch size for the latency (default 10)")
    parser.add_argument("--data-dir", help="TFDS data folder (default: $TFDS_DATA_DIR)")
    cli.add_unsafe_load_flag(parser)
    return parser.parse_args(argv)


def check_args(args):
    for flag, value, minimum in (("--test-images", args.test_images, 1),
                                 ("--timing-repeats", args.timing_repeats, 1)):
        if value < minimum:
            cli.fail(PROG, f"{flag} must be at least {minimum}, got {value}")
    if args.test_images > cifar.CIFAR10_TEST_IMAGES:
        cli.fail(PROG, f"--test-images {args.test_images} is more than the "
                       f"{cifar.CIFAR10_TEST_IMAGES:,} CIFAR-10 test images")


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    backend = cli.check_backend(PROG)
    try:
        check_before_imports(args, backend)
        cli.import_tensorflow_quietly()
        out, report = export.export(
            args.model, args.format, backend, out=args.out, test_images=args.test_images,
            timing_repeats=args.timing_repeats, data_dir=args.data_dir,
            unsafe_load=args.unsafe_load)
    except UserError as error:
        cli.fail(PROG, str(error))
    print(export.summary(out, report))
    checked = report["parity"]
    if checked["max_probability_difference"] > checked["tolerance"]:
        print(f"{PROG}: error: the artifact's probabilities differ from the .keras model's by "
              f"{checked['max_probability_difference']:.2e} (more than "
              f"{checked['tolerance']:.0e}); it is kept in {out} for inspection",
              file=sys.stderr)
        raise SystemExit(1)
    return out


def check_before_imports(args, backend):
    """The format, the model file and the output folder, checked before the slow imports."""
    export.check_can_export(args.format, backend)
    model_path, run_dir, _ = loading.check_model_file(args.model, args.unsafe_load)
    out = args.out or export.default_out(model_path, run_dir, args.format)
    export.check_out(out)
    folders.check_can_create(out, flag="--out")


if __name__ == "__main__":
    main()
