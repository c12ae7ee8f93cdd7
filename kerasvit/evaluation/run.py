"""Evaluating a trained model on the CIFAR-10 test split, whatever backend trained it: the
metrics (scikit-learn), test-time augmentation, speed, and the files `python -m
kerasvit.evaluate` writes (metrics.json keeping the training keys, report.md, predictions.npz,
the figures). kerasvit.cli.evaluate parses and checks; compare_models calls this too."""

import datetime
from pathlib import Path

import numpy as np

from kerasvit import CLASS_NAMES, models
from kerasvit.data import cifar
from kerasvit.errors import UserError
from kerasvit.evaluation import classification, figures, summary, timing, tta
from kerasvit.runs import environment, folders, loading


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


def load_test_set(data_dir, limit, per_class=0):
    """The CIFAR-10 test split as (uint8 images, int64 labels): the first `per_class` of each
    class (a run's test_per_class; 0: all), then optionally the first `limit`."""
    test = cifar.load_cifar10(cifar.resolve_data_dir(data_dir))["test"]
    images, labels = cifar.test_subset(test, per_class)
    if limit:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def describe(model, model_path, run_dir, backend):
    """Who and where: model, backends, device and time of this evaluation."""
    trained = (loading.read_run_file(run_dir, "env.json") or {}).get("backend")
    env = environment.collect_env(backend)
    return {
        "model": loading.model_name(model, loading.read_run_file(run_dir, "config.json")),
        "model_path": str(model_path),
        "parameters": int(model.count_params()),
        "image_size": [int(s) for s in models.image_size(model)],
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
    for folder in (out_dir, run_dir):
        metrics = loading.read_run_file(folder, "metrics.json")
        if metrics is not None:
            return metrics
    return {}


def evaluate(path, backend, *, out=None, batch_size=256, test_images=0, timing_repeats=10,
             data_dir=None, tta_views=None, unsafe_load=False):
    """Evaluates the model of a run folder or .keras file on the test split (its first
    `test_images`, 0: all) and writes the outputs; returns (output folder, evaluation).
    `tta_views` ("flip", "flip_translate", or "run": the run's tta_method, else flip) adds
    test-time augmentation; `data_dir` defaults to the run's."""
    model_path, run_dir = loading.resolve_model_path(path)
    model = loading.load_model(model_path, unsafe_load)
    config = loading.read_run_file(run_dir, "config.json") or {}
    out_dir = output_dir(out, run_dir, model_path)
    metrics = existing_metrics(out_dir, run_dir)  # Read first: a broken file fails fast.
    # A run trained with --test-per-class is evaluated on the same per-class test subset.
    images, labels = load_test_set(data_dir or config.get("data_dir", ""), test_images,
                                   config.get("test_per_class", 0))
    print(f"evaluating {model_path} on {len(images)} test images (backend {backend})")

    logits = tta.predict_logits(model, images, batch_size)
    probabilities = classification.softmax(logits)
    evaluation = describe(model, model_path, run_dir, backend)
    evaluation.update(classification.classification_metrics(labels, probabilities, CLASS_NAMES))
    evaluation["loss"] = classification.cross_entropy(labels, logits)
    if tta_views:
        method = config.get("tta_method", "flip") if tta_views == "run" else tta_views
        evaluation["tta"] = tta.tta_evaluation(model, images, labels, batch_size, logits,
                                               method=method)
    evaluation.update(timing.measure_speed(model, images, batch_size, timing_repeats))

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
    return out_dir, evaluation


def write_outputs(out_dir, metrics, evaluation, images, labels, logits, probabilities, history):
    """Figures, metrics.json, report.md and predictions.npz; the last three atomically."""
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
