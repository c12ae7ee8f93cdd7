"""Evaluate a trained model on the CIFAR-10 test set, on whichever backend KERAS_BACKEND names.

    KERAS_BACKEND=torch python -m kerasvit.evaluate runs/cnn-jax-20261122-101500
    python -m kerasvit.evaluate path/to/model.keras --out reports/cnn

Writes into the run folder (or --out): metrics.json (the training keys kept, this evaluation
under "evaluation"), report.md, predictions.npz and the figures confusion_matrix.png,
per_class_accuracy.png, training_curves.png (run folders only), mistakes.png, samples.png."""

import datetime
from pathlib import Path

import numpy as np

from kerasvit import CLASS_NAMES, cli
from kerasvit.errors import UserError
from kerasvit.evaluation import timing, tta

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
        return evaluate(args, backend)
    except UserError as error:
        cli.fail(PROG, str(error))


def check_before_imports(args):
    """The model file and the output folder, checked before the slow framework imports."""
    from kerasvit.runs import folders, loading

    model_path, run_dir, _ = loading.check_model_file(args.model, args.unsafe_load)
    folders.check_can_create(output_path(args.out, run_dir, model_path), flag="--out")


class OutputError(UserError, RuntimeError):
    """The output folder cannot be written; the message is shown as one line."""


def output_path(out, run_dir, model_path):
    return Path(out) if out else run_dir or model_path.with_name(f"{model_path.stem}_evaluation")


def output_dir(out, run_dir, model_path):
    path = output_path(out, run_dir, model_path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create output folder {path} ({error.strerror}); "
                          "pass a writable --out") from None
    return path


def load_test_set(data_dir, limit):
    """The CIFAR-10 test split as (uint8 images, int64 labels), optionally its first `limit`."""
    from kerasvit.data import cifar

    images, labels = cifar.load_cifar10(cifar.resolve_data_dir(data_dir))["test"]
    if limit:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def describe(model, model_path, run_dir, backend):
    """Who and where: model, backends, device and time of this evaluation."""
    from kerasvit.runs import environment, loading

    trained = (loading.read_run_file(run_dir, "env.json") or {}).get("backend")
    env = environment.collect_env(backend)
    return {
        "model": loading.model_name(model, loading.read_run_file(run_dir, "config.json")),
        "model_path": str(model_path),
        "parameters": int(model.count_params()),
        "image_size": [int(s) for s in model.input_shape[1:3]],
        "backend": backend,
        "trained_backend": trained,
        "device": f"{env['device_kind']}: {env['cpu']}" if env["device_kind"] == "cpu"
                  else ", ".join(env["devices"]),
        "evaluated_at": datetime.datetime.now().isoformat(timespec="seconds"),
        "versions": env["versions"],
    }


def existing_metrics(out_dir, run_dir):
    """What metrics.json in the output folder already holds (else the run's training
    metrics), so that writing the evaluation never drops training keys."""
    from kerasvit.runs import loading

    for folder in (out_dir, run_dir):
        metrics = loading.read_run_file(folder, "metrics.json")
        if metrics is not None:
            return metrics
    return {}


def evaluate(args, backend):
    from kerasvit.evaluation import classification, figures
    from kerasvit.runs import folders, loading

    model_path, run_dir = loading.resolve_model_path(args.model)
    model = loading.load_model(model_path, args.unsafe_load)
    config = loading.read_run_file(run_dir, "config.json") or {}
    out_dir = output_dir(args.out, run_dir, model_path)
    metrics = existing_metrics(out_dir, run_dir)  # Read first: a broken file fails fast.
    images, labels = load_test_set(args.data_dir or config.get("data_dir", ""), args.test_images)
    print(f"evaluating {model_path} on {len(images)} test images (backend {backend})")

    logits = tta.predict_logits(model, images, args.batch_size)
    probabilities = classification.softmax(logits)
    evaluation = describe(model, model_path, run_dir, backend)
    evaluation.update(classification.classification_metrics(labels, probabilities, CLASS_NAMES))
    evaluation["loss"] = classification.cross_entropy(labels, logits)
    if args.tta:
        method = args.tta_method or config.get("tta_method", "flip")
        evaluation["tta"] = tta.tta_evaluation(model, images, labels, args.batch_size, logits,
                                               method=method)
    evaluation.update(timing.measure_speed(model, images, args.batch_size, args.timing_repeats))

    history = figures.read_history(run_dir / "history.csv") if run_dir else None
    try:
        write_outputs(out_dir, metrics, evaluation, images, labels, logits, probabilities,
                      history)
    except OSError as error:
        if isinstance(error, folders.WriteError):
            reason = str(error)
        elif folders.is_write_error(error):
            reason = folders.write_error(out_dir, error)
        else:
            raise
        raise OutputError(f"{reason}; free some space there or pass another --out") from None
    print_summary(out_dir, evaluation)
    return out_dir


def write_outputs(out_dir, metrics, evaluation, images, labels, logits, probabilities, history):
    """Figures, metrics.json, report.md and predictions.npz; the last three atomically."""
    from kerasvit.evaluation import figures, summary
    from kerasvit.runs import folders

    figure_names = figures.write_figures(out_dir, images, labels, probabilities, evaluation,
                                         CLASS_NAMES, history)
    training = {key: value for key, value in metrics.items() if key != "evaluation"}
    metrics["evaluation"] = evaluation
    folders.write_json(out_dir / "metrics.json", metrics)
    report = summary.report_markdown(evaluation, figure_names, training) + "\n"
    folders.write_atomically(out_dir / "report.md", lambda path: Path(path).write_text(report))

    def write_predictions(path):
        with open(path, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez_compressed(f, labels=labels, logits=logits)

    folders.write_atomically(out_dir / "predictions.npz", write_predictions)


def print_summary(out_dir, evaluation):
    print("\n".join([
        "",
        f"  test accuracy   {evaluation['accuracy']:.4f}  (top-5 {evaluation['top5_accuracy']:.4f}, "
        f"macro F1 {evaluation['f1_macro']:.4f}, loss {evaluation['loss']:.4f})",
        *([f"  with TTA        {evaluation['tta']['accuracy']:.4f}  (top-5 "
           f"{evaluation['tta']['top5_accuracy']:.4f}, macro F1 {evaluation['tta']['f1_macro']:.4f})"]
          if "tta" in evaluation else []),
        f"  throughput      {evaluation['images_per_s']:.0f} images/s "
        f"(batch {evaluation['throughput_batch_size']})",
        f"  latency         {evaluation['latency_ms']:.2f} ms per image (batch 1, median)",
        f"  report          {out_dir / 'report.md'}",
    ]))


if __name__ == "__main__":
    main()
