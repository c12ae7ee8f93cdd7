"""Evaluate a trained model on the CIFAR-10 test set, on whichever backend KERAS_BACKEND names.

    KERAS_BACKEND=torch python -m kerasvit.evaluate runs/cnn-jax-20261122-101500
    python -m kerasvit.evaluate path/to/model.keras --out reports/cnn

Writes into the run folder (or --out): metrics.json (the training keys kept, this evaluation
under "evaluation"), report.md, predictions.npz and the figures confusion_matrix.png,
per_class_accuracy.png, training_curves.png (run folders only), mistakes.png, samples.png."""

from kerasvit import cli
from kerasvit.errors import UserError
from kerasvit.evaluation import run, summary, tta
from kerasvit.runs import folders, loading

PROG = "kerasvit.evaluate"


def parse_args(argv=None):
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("model", metavar="RUN_OR_KERAS_FILE",
                        help="a kerasvit run folder or a .keras file (saved under any backend)")
    parser.add_argument("--out", help="output folder (default: the run folder, or "
                                      "<file>_evaluation/ beside a lone .keras file)")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="prediction and throughput batch size (default 256)")
    parser.add_argument("--test-images", type=int, default=0, metavar="N",
                        help="evaluate only the first N test images, for quick checks (default: all 10,000)")
    parser.add_argument("--timing-repeats", type=int, default=10, metavar="N",
                        help="timed batches for throughput; 3N single images for latency (default 10)")
    parser.add_argument("--data-dir", help="TFDS data folder (default: the run's, else $TFDS_DATA_DIR)")
    parser.add_argument("--tta", action="store_true",
                        help="also report accuracy with test-time augmentation (separately)")
    parser.add_argument("--tta-method", choices=tuple(tta.TTA_METHODS),
                        help="flip (image + mirror) or flip_translate (6 views); default: the "
                             "run's tta_method, else flip")
    cli.add_unsafe_load_flag(parser)
    return parser.parse_args(argv)


def check_args(args):
    for flag, value, minimum in (("--batch-size", args.batch_size, 1),
                                 ("--test-images", args.test_images, 0),
                                 ("--timing-repeats", args.timing_repeats, 1)):
        if value < minimum:
            cli.fail(PROG, f"{flag} must be at least {minimum}, got {value}")


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    backend = cli.check_backend(PROG)
    try:
        check_before_imports(args)
        cli.import_tensorflow_quietly()
        tta_views = (args.tta_method or "run") if args.tta else None
        out_dir, evaluation = run.evaluate(
            args.model, backend, out=args.out, batch_size=args.batch_size,
            test_images=args.test_images, timing_repeats=args.timing_repeats,
            data_dir=args.data_dir, tta_views=tta_views, unsafe_load=args.unsafe_load)
    except UserError as error:
        cli.fail(PROG, str(error))
    print()
    print(summary.screen_summary(out_dir, evaluation))
    return out_dir


def check_before_imports(args):
    """The model file and the output folder, checked before the slow framework imports."""
    model_path, run_dir, _ = loading.check_model_file(args.model, args.unsafe_load)
    folders.check_can_create(run.output_path(args.out, run_dir, model_path), flag="--out")


if __name__ == "__main__":
    main()
