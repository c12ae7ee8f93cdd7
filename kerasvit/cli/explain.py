"""Show what a trained model looks at: attention maps for ViTs, Grad-CAM for the CNN.

    KERAS_BACKEND=jax python -m kerasvit.explain runs/<vit run> --num-images 8
    KERAS_BACKEND=torch python -m kerasvit.explain runs/<cnn run> --images cat.png dog.jpg

ViT (`vit`, `vit_b16`): the class token's attention per layer (averaged over heads) and the
attention rollout across layers (see `kerasvit.attention`). CNN: Grad-CAM on the last
convolutional block, for the predicted class or `--class NAME`. Writes one PNG per image
(under explain/) and an `explain.md` index, in the run folder or `--out DIR`.

The function API (`explain_batch`, `explain_image`) works on any loaded model."""

from pathlib import Path

from kerasvit import CLASS_NAMES, cli
from kerasvit.errors import UserError
from kerasvit.explain import explanations

PROG = "kerasvit.explain"
DEFAULT_NUM_IMAGES = 8


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
        raise explanations.ExplainError(f"--num-images must be positive, got {args.num_images}")
    if args.class_name is not None:
        explanations.class_index_of(args.class_name)
    for path in args.images or ():
        if not Path(path).is_file():
            raise explanations.ExplainError(f"image file {path} does not exist")


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
    from kerasvit.explain import report
    from kerasvit.runs import loading

    model, config, run_dir = loading.load_run(args.model, args.unsafe_load)
    model_name = loading.model_name(model, config)
    if args.class_name and explanations.explain_method(model_name, model) != "gradcam":
        raise explanations.ExplainError("--class applies to Grad-CAM (cnn) only: attention maps do not "
                           "depend on a class")
    out_dir = output_folder(args, run_dir)
    if args.images:
        images = report.read_image_files(args.images, model)
        labels, sources = [None] * len(images), [Path(p).name for p in args.images]
    else:
        images, labels, indices = report.test_sample(model, args.num_images)
        sources = [f"test image {i}" for i in indices]
    class_index = explanations.class_index_of(args.class_name) if args.class_name else None
    entries = report.explain_and_draw(model, model_name, images, labels, sources, class_index, out_dir)
    index_path = report.write_index(out_dir, entries, model_name, args.model, model)
    print(f"wrote {len(entries)} figures and {index_path}")
    return index_path


def output_folder(args, run_dir):
    from kerasvit.runs.loading import resolve_model_path

    out_dir = Path(args.out) if args.out else run_dir or resolve_model_path(args.model)[0].parent
    try:
        (out_dir / "explain").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise explanations.ExplainError(f"cannot create {out_dir / 'explain'} ({error.strerror}); "
                           "choose a writable --out") from None
    return out_dir


if __name__ == "__main__":
    main()
