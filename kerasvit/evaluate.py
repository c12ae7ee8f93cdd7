"""Evaluate a trained model on the CIFAR-10 test set, on whichever backend KERAS_BACKEND names.

    KERAS_BACKEND=torch python -m kerasvit.evaluate runs/cnn-jax-20261122-101500
    python -m kerasvit.evaluate path/to/model.keras --out reports/cnn

Writes into the run folder (or --out): metrics.json (the training keys kept, this evaluation
under "evaluation"), report.md, predictions.npz and the figures confusion_matrix.png,
per_class_accuracy.png, training_curves.png (run folders only), mistakes.png, samples.png.
"""

import datetime
import sys
import time
from pathlib import Path

import numpy as np

from kerasvit import CLASS_NAMES, cli
from kerasvit.errors import UserError

PROG = "kerasvit.evaluate"
WARMUP_CALLS = 2  # The first calls trace/compile (TF graphs, XLA) and fill caches.
TIMING_BUDGET_S = 30.0  # Timing stops early past this, after at least MIN_TIMED_CALLS calls.
MIN_TIMED_CALLS = 3
TTA_METHODS = {
    "flip": "softmax averaged over each test image and its horizontal mirror (flip TTA)",
    "flip_translate": "softmax averaged over 6 views: the image and its mirror (weight 1/2), "
                      "and both shifted by one pixel down-right and up-left (1/4 each)",
}


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
    parser.add_argument("--tta-method", choices=tuple(TTA_METHODS),
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
    from kerasvit import loading, runs

    model_path, run_dir, _ = loading.check_model_file(args.model, args.unsafe_load)
    runs.check_can_create(output_path(args.out, run_dir, model_path), flag="--out")


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
    from kerasvit import data

    images, labels = data.load_cifar10(data.resolve_data_dir(data_dir))["test"]
    if limit:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def predict_logits(model, images, batch_size):
    """Logits for uint8 images, resized to the model's input exactly as in training."""
    from kerasvit import data

    dataset = data.make_dataset(images, np.zeros(len(images), np.int64),
                                image_size=model.input_shape[1:3], batch_size=batch_size,
                                training=False)
    verbose = 1 if sys.stdout.isatty() else 0
    return np.asarray(model.predict(dataset, verbose=verbose), dtype=np.float32)


def flip_averaged_probabilities(model, images, batch_size, logits=None):
    """Mean of the softmax over each image and its mirror image (`logits`: the plain
    images' logits when already computed)."""
    from kerasvit import reports

    if logits is None:
        logits = predict_logits(model, images, batch_size)
    mirrored = predict_logits(model, np.ascontiguousarray(images[:, :, ::-1]), batch_size)
    return (reports.softmax(logits) + reports.softmax(mirrored)) / 2.0


def shifted(images, offset):
    """Images moved by one pixel down-right (offset 0) or up-left (offset 2), with the
    edge reflected into the gap."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    height, width = images.shape[1:3]
    return np.ascontiguousarray(padded[:, offset:offset + height, offset:offset + width])


def tta_probabilities(model, images, batch_size, method="flip", logits=None):
    """"flip": the image and its mirror. "flip_translate" (airbench's): half that, plus a
    quarter each for the flip-averaged image shifted by one pixel either way."""
    plain = flip_averaged_probabilities(model, images, batch_size, logits)
    if method == "flip":
        return plain
    moved = [flip_averaged_probabilities(model, shifted(images, offset), batch_size)
             for offset in (0, 2)]
    return 0.5 * plain + 0.25 * moved[0] + 0.25 * moved[1]


def tta_evaluation(model, images, labels, batch_size, logits=None, method="flip"):
    from kerasvit import reports

    probabilities = tta_probabilities(model, images, batch_size, method, logits)
    metrics = reports.classification_metrics(labels, probabilities, CLASS_NAMES)
    return {"method": TTA_METHODS[method],
            **{key: metrics[key] for key in ("accuracy", "top5_accuracy", "f1_macro")}}


def median_call_seconds(model, batch, repeats):
    """Median wall time of `model.predict_on_batch(batch)` after warm-up. predict_on_batch
    returns numpy, so every timed call includes the device sync on all backends."""
    for _ in range(WARMUP_CALLS):
        model.predict_on_batch(batch)
    times = []
    started = time.perf_counter()
    while len(times) < repeats:
        start = time.perf_counter()
        model.predict_on_batch(batch)
        times.append(time.perf_counter() - start)
        if len(times) >= MIN_TIMED_CALLS and time.perf_counter() - started > TIMING_BUDGET_S:
            break
    return float(np.median(times)), len(times)


def measure_speed(model, images, batch_size, repeats):
    """Throughput (images/s at `batch_size`) and batch-1 latency (ms), both medians."""
    from kerasvit import data

    batch_size = min(batch_size, len(images))
    batch = data.prepare_images(images[:batch_size], model.input_shape[1:3])
    batch_seconds, batches = median_call_seconds(model, batch, repeats)
    single_seconds, singles = median_call_seconds(model, batch[:1], 3 * repeats)
    return {
        "images_per_s": batch_size / batch_seconds,
        "throughput_batch_size": batch_size,
        "latency_ms": 1000.0 * single_seconds,
        "timing_method": (
            f"model.predict_on_batch on in-memory images (no input pipeline); median of "
            f"{batches} batches of {batch_size} and of {singles} single images, after "
            f"{WARMUP_CALLS} warm-up calls each; the output is copied to numpy, which syncs "
            f"the device."),
    }


def describe(model, model_path, run_dir, backend):
    """Who and where: model, backends, device and time of this evaluation."""
    from kerasvit import loading, runs

    trained = (loading.read_run_file(run_dir, "env.json") or {}).get("backend")
    env = runs.collect_env(backend)
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
    from kerasvit import loading

    for folder in (out_dir, run_dir):
        metrics = loading.read_run_file(folder, "metrics.json")
        if metrics is not None:
            return metrics
    return {}


def evaluate(args, backend):
    from kerasvit import loading, reports, runs

    model_path, run_dir = loading.resolve_model_path(args.model)
    model = loading.load_model(model_path, args.unsafe_load)
    config = loading.read_run_file(run_dir, "config.json") or {}
    out_dir = output_dir(args.out, run_dir, model_path)
    metrics = existing_metrics(out_dir, run_dir)  # Read first: a broken file fails fast.
    images, labels = load_test_set(args.data_dir or config.get("data_dir", ""), args.test_images)
    print(f"evaluating {model_path} on {len(images)} test images (backend {backend})")

    logits = predict_logits(model, images, args.batch_size)
    probabilities = reports.softmax(logits)
    evaluation = describe(model, model_path, run_dir, backend)
    evaluation.update(reports.classification_metrics(labels, probabilities, CLASS_NAMES))
    evaluation["loss"] = reports.cross_entropy(labels, logits)
    if args.tta:
        method = args.tta_method or config.get("tta_method", "flip")
        evaluation["tta"] = tta_evaluation(model, images, labels, args.batch_size, logits,
                                           method=method)
    evaluation.update(measure_speed(model, images, args.batch_size, args.timing_repeats))

    history = reports.read_history(run_dir / "history.csv") if run_dir else None
    try:
        write_outputs(out_dir, metrics, evaluation, images, labels, logits, probabilities,
                      history)
    except OSError as error:
        if isinstance(error, runs.WriteError):
            reason = str(error)
        elif runs.is_write_error(error):
            reason = runs.write_error(out_dir, error)
        else:
            raise
        raise OutputError(f"{reason}; free some space there or pass another --out") from None
    print_summary(out_dir, evaluation)
    return out_dir


def write_outputs(out_dir, metrics, evaluation, images, labels, logits, probabilities, history):
    """Figures, metrics.json, report.md and predictions.npz; the last three atomically."""
    from kerasvit import reports, runs

    figures = reports.write_figures(out_dir, images, labels, probabilities, evaluation,
                                    CLASS_NAMES, history)
    training = {key: value for key, value in metrics.items() if key != "evaluation"}
    metrics["evaluation"] = evaluation
    runs.write_json(out_dir / "metrics.json", metrics)
    report = reports.report_markdown(evaluation, figures, training) + "\n"
    runs.write_atomically(out_dir / "report.md", lambda path: Path(path).write_text(report))

    def write_predictions(path):
        with open(path, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez_compressed(f, labels=labels, logits=logits)

    runs.write_atomically(out_dir / "predictions.npz", write_predictions)


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
