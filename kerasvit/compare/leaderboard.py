"""Which model should I use? Rank trained runs side by side, whatever backend made them
(`python -m kerasvit.compare_models`: kerasvit.cli.compare_models).

Per run: model, how it was trained (from scratch, fine-tuned from a keras-hub preset, or a
linear probe of one: only the head trained), backend, parameters, model file size, epochs, training time, best validation
accuracy, test accuracy and macro F1, the train-vs-validation gap, batch-1 latency and
throughput. A run without an evaluation is evaluated first (kerasvit.evaluate, on this
backend, written into the run folder). Writes runs/models-<time>/: models.md, models.csv,
models.json and models.png (test accuracy vs latency with the Pareto front; validation
accuracy of every run against epochs and against wall time).
"""

import csv
import datetime
import inspect
import math
from collections import Counter
from pathlib import Path

import numpy as np

from kerasvit.errors import UserError
from kerasvit.runs import folders

# Data settings that change what an accuracy means: runs that differ in them are flagged.
DATA_SETTINGS = ("subset_per_class", "test_per_class", "augmentation")
CSV_FIELDS = (
    "rank", "run", "model", "training", "preset", "backend", "parameters", "model_file_mb", "epochs", "train_time_s",
    "best_val_accuracy", "test_accuracy", "test_f1_macro", "train_val_gap", "latency_ms",
    "images_per_s", "throughput_batch_size", "pareto", "comparable", "comparability_note",
    "subset_per_class", "test_per_class", "augmentation", "train_images", "test_images", "evaluated_backend",
    "evaluated_device", "run_dir",
)


class NotARunError(UserError, ValueError):
    """A path given as a run is not a finished kerasvit run folder."""


# ---------------------------------------------------------------- run folders


def unique_paths(paths):
    """The paths in order, each folder once (shell globs often overlap)."""
    seen, unique = set(), []
    for path in map(Path, paths):
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def check_run_folder(path):
    """Returns `path` if it is a finished run folder, else raises NotARunError (one line)."""
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a folder"
        raise NotARunError(f"{path} {what}; pass run folders written by kerasvit.train")
    # Every training run writes both at its start; compare-* folders have a config.json only.
    identity = [name for name in ("config.json", "env.json") if not (path / name).is_file()]
    if identity:
        raise NotARunError(f"{path} is not a kerasvit run folder (no {' or '.join(identity)}); "
                           "pass run folders written by kerasvit.train")
    missing = [name for name in ("model.keras", "metrics.json", "history.csv")
               if not (path / name).is_file()]
    if missing:
        raise NotARunError(f"run {path} has not finished (no {', '.join(missing)}); finish it "
                           f"with python -m kerasvit.train --resume {path}, or leave it out")
    return path


def evaluation_of(run_dir):
    from kerasvit.runs import loading

    return (loading.read_run_file(run_dir, "metrics.json") or {}).get("evaluation")


def evaluate_run(run_dir, args, backend):
    """kerasvit.evaluate on one run folder, with this command's evaluation flags; returns
    (report folder, evaluation). TensorFlow must be imported already (kerasvit.cli does)."""
    from kerasvit.evaluation import run

    try:
        return run.evaluate(run_dir, backend, batch_size=args.batch_size,
                            test_images=args.test_images, timing_repeats=args.timing_repeats,
                            data_dir=args.data_dir)
    except run.OutputError as error:  # Not a UserError, but the user's to fix.
        raise NotARunError(str(error)) from None


def new_report_dir(root):
    """A fresh runs/models-<time>/ (a suffix when two start in the same second); created by
    runs.new_run_dir, which refuses an existing folder, so nothing is ever overwritten."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"models-{stamp}"
    suffix = 2
    while path.exists():
        path = Path(root) / f"models-{stamp}-{suffix}"
        suffix += 1
    return folders.new_run_dir("models", None, run_dir=path)


# ---------------------------------------------------------------- one row per run


def finite(value):
    """A float, or None for missing/NaN (NaN is not valid JSON)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def last_value(history, column):
    values = [finite(v) for v in (history or {}).get(column, [])]
    values = [v for v in values if v is not None]
    return values[-1] if values else None


def training_of(config):
    """"scratch", "fine-tuned" or "linear probe": models whose builder takes `finetune` (the
    keras-hub presets: vit_b16, pretrained) start from pretrained weights."""
    from kerasvit.models import MODEL_NAMES, get_spec

    model = config.get("model")
    if model not in MODEL_NAMES:
        return None
    parameters = inspect.signature(get_spec(model).builder).parameters
    if "finetune" not in parameters:
        return "scratch"
    finetune = (config.get("model_args") or {}).get("finetune", parameters["finetune"].default)
    return "linear probe" if finetune == "linear" else "fine-tuned"


def preset_of(config):
    """The preset a fine-tuned run started from (a local folder by its name), else None."""
    from kerasvit.models import MODEL_NAMES, get_spec

    model = config.get("model")
    if model not in MODEL_NAMES:
        return None
    parameters = inspect.signature(get_spec(model).builder).parameters
    if "preset" not in parameters:
        return None
    preset = str((config.get("model_args") or {}).get("preset", parameters["preset"].default))
    return Path(preset).name if "/" in preset else preset


def run_row(run_dir, history):
    from kerasvit.runs import loading

    config = loading.read_run_file(run_dir, "config.json")
    env = loading.read_run_file(run_dir, "env.json") or {}
    metrics = loading.read_run_file(run_dir, "metrics.json")
    evaluation = metrics["evaluation"]
    epoch_times = (history or {}).get("epoch_time_s")
    train_accuracy, val_accuracy = last_value(history, "accuracy"), last_value(history, "val_accuracy")
    return {
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "model": config.get("model") or evaluation.get("model"),
        "training": training_of(config),
        "preset": preset_of(config),
        "backend": env.get("backend") or metrics.get("backend"),
        "parameters": evaluation["parameters"],
        "model_file_mb": (run_dir / "model.keras").stat().st_size / 1e6,
        "epochs": len(history["epoch"]) if history else metrics.get("epochs"),
        # Time inside fit() (sum of epoch times); wall_time_s would add data loading and the
        # test evaluation, which say nothing about the model.
        "train_time_s": finite(sum(epoch_times)) if epoch_times else finite(metrics.get("wall_time_s")),
        "best_val_accuracy": finite(metrics.get("best_val_accuracy")),
        "test_accuracy": finite(evaluation["accuracy"]),
        "test_f1_macro": finite(evaluation["f1_macro"]),
        # Last epoch's running train accuracy (augmented, dropout on) minus validation accuracy:
        # a lower bound on the real gap, but comparable between runs.
        "train_val_gap": (train_accuracy - val_accuracy
                          if None not in (train_accuracy, val_accuracy) else None),
        "latency_ms": finite(evaluation["latency_ms"]),
        "images_per_s": finite(evaluation["images_per_s"]),
        "throughput_batch_size": evaluation["throughput_batch_size"],
        "subset_per_class": config.get("subset_per_class", 0),
        "test_per_class": config.get("test_per_class", 0),
        "augmentation": config.get("augmentation"),
        "train_images": metrics.get("train_images"),
        "test_images": evaluation["test_images"],
        "evaluated_backend": evaluation.get("backend"),
        "evaluated_device": evaluation.get("device"),
        "timing_method": evaluation.get("timing_method"),
    }


def collect_rows(run_dirs):
    from kerasvit.evaluation import figures

    histories = {str(run_dir): figures.read_history(run_dir / "history.csv") for run_dir in run_dirs}
    rows = [run_row(run_dir, histories[str(run_dir)]) for run_dir in run_dirs]
    return rows, histories


# ---------------------------------------------------------------- ranking and flags


def pareto_front(points):
    """Indices of the (accuracy, latency) points no other point beats: none has at least
    the accuracy and at most the latency, and is strictly better in one. None = unknown."""
    known = [i for i, (acc, lat) in enumerate(points) if acc is not None and lat is not None]
    front = []
    for i in known:
        acc, lat = points[i]
        dominated = any(points[j][0] >= acc and points[j][1] <= lat and points[j] != points[i]
                        for j in known)
        if not dominated:
            front.append(i)
    return front


def reference_settings(rows):
    """The data settings most runs share (ties: the first run's), the yardstick for flags."""
    settings = [tuple(row[key] for key in DATA_SETTINGS + ("test_images",)) for row in rows]
    counts = Counter(settings)
    best = max(counts.values())
    return dict(zip(DATA_SETTINGS + ("test_images",), next(s for s in settings if counts[s] == best)))


def comparability_note(row, reference):
    """Why `row` is not directly comparable with the reference runs ("" if it is)."""
    differences = [f"{key} {row[key]!r} (others {reference[key]!r})"
                   for key in DATA_SETTINGS + ("test_images",) if row[key] != reference[key]]
    return "; ".join(differences)


def build_report(rows, command):
    reference = reference_settings(rows)
    front = set(pareto_front([(row["test_accuracy"], row["latency_ms"]) for row in rows]))
    for index, row in enumerate(rows):
        row["pareto"] = index in front
        row["comparability_note"] = comparability_note(row, reference)
        row["comparable"] = not row["comparability_note"]
    # Best test accuracy first; runs without one last.
    ranked = sorted(rows, key=lambda row: (row["test_accuracy"] is None, -(row["test_accuracy"] or 0)))
    for rank, row in enumerate(ranked, start=1):
        row["rank"] = rank
    timing_places = sorted({f"{row['evaluated_backend']} on {row['evaluated_device']}" for row in rows})
    return {
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "reference_data_settings": reference,
        "timing_measured_on": timing_places,
        "runs": ranked,
    }


# ---------------------------------------------------------------- outputs


def fmt(value, spec=".4f"):
    return "-" if value is None else format(value, spec)


def duration(seconds):
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def parameter_count(count):
    return f"{count / 1e6:.2f}M" if count >= 1e5 else f"{count / 1e3:.1f}k"


def run_label(row, rows):
    """`model (backend)`, or the run folder's name when that is ambiguous."""
    label = f"{row['model']} ({row['backend']})"
    twins = sum(f"{other['model']} ({other['backend']})" == label for other in rows)
    return row["run"] if twins > 1 else label


MARKDOWN_COLUMNS = (
    ("#", lambda r: str(r["rank"])),
    ("run", lambda r: f"`{r['run']}`"),
    ("model", lambda r: r["model"]),
    ("training", lambda r: (r.get("training") or "-")
     + (f" (`{r['preset']}`)" if r.get("preset") else "")),
    ("backend", lambda r: r["backend"]),
    ("params", lambda r: parameter_count(r["parameters"])),
    ("file MB", lambda r: fmt(r["model_file_mb"], ".1f")),
    ("epochs", lambda r: str(r["epochs"])),
    ("train time", lambda r: duration(r["train_time_s"])),
    ("best val acc", lambda r: fmt(r["best_val_accuracy"])),
    ("test acc", lambda r: fmt(r["test_accuracy"])),
    ("macro F1", lambda r: fmt(r["test_f1_macro"])),
    ("train-val gap", lambda r: fmt(r["train_val_gap"], "+.3f")),
    ("latency ms (batch 1)", lambda r: fmt(r["latency_ms"], ".2f")),
    ("images/s", lambda r: f"{fmt(r['images_per_s'], '.0f')} (batch {r['throughput_batch_size']})"),
    ("Pareto", lambda r: "yes" if r["pareto"] else ""),
    ("comparable", lambda r: "yes" if r["comparable"] else f"**no**: {r['comparability_note']}"),
)


def markdown_table(rows):
    lines = ["| " + " | ".join(name for name, _ in MARKDOWN_COLUMNS) + " |",
             "|" + "---|" * len(MARKDOWN_COLUMNS)]
    lines += ["| " + " | ".join(cell(row) for _, cell in MARKDOWN_COLUMNS) + " |" for row in rows]
    return lines


def verdict(rows):
    """One line per question a reader has: most accurate, fastest, the trade-off set."""
    scored = [r for r in rows if r["test_accuracy"] is not None]
    timed = [r for r in rows if r["latency_ms"] is not None]
    lines = []
    if scored:
        best = max(scored, key=lambda r: r["test_accuracy"])
        lines.append(f"- Most accurate: `{best['run']}` ({best['model']}, test accuracy "
                     f"{best['test_accuracy']:.4f}).")
    if timed:
        fastest = min(timed, key=lambda r: r["latency_ms"])
        lines.append(f"- Fastest at batch 1: `{fastest['run']}` ({fastest['model']}, "
                     f"{fastest['latency_ms']:.2f} ms).")
    front = [r for r in sorted(rows, key=lambda r: r["latency_ms"] or 0) if r["pareto"]]
    if front:
        names = ", ".join(f"`{r['run']}`" for r in front)
        lines.append(f"- Pareto front (no other run is both more accurate and faster), fastest "
                     f"first: {names}. Every other run is beaten on both by one of these.")
    return lines


def caveats(report):
    rows = report["runs"]
    lines = []
    flagged = [r for r in rows if not r["comparable"]]
    if flagged:
        reference = ", ".join(f"{k}={v!r}" for k, v in report["reference_data_settings"].items())
        lines.append(f"- **Not directly comparable**: {len(flagged)} run(s) differ from the "
                     f"others' data settings ({reference}); see the last column. Their "
                     "accuracies measure a different task. In models.png they have hollow markers "
                     "and dotted curves.")
    if len(report["timing_measured_on"]) > 1:
        lines.append("- Latency and throughput were measured on different backends or machines ("
                     + "; ".join(report["timing_measured_on"]) + "): compare them only within "
                     "one, or run again with `--reevaluate` to measure every run here.")
    probes = [r for r in rows if r.get("training") == "linear probe"]
    if probes:
        lines.append(f"- **Linear probes**: {len(probes)} run(s) ("
                     + ", ".join(f"`{r['run']}`" for r in probes) + ") trained only the head on a "
                     "frozen pretrained backbone; fine-tuned runs trained every weight from the "
                     "preset's, scratch runs from random weights (the training column).")
    lines.append("- Train-vs-validation gap: the last epoch's training accuracy (a running "
                 "average over the epoch, with augmentation and dropout on) minus its validation "
                 "accuracy. Positive means overfitting; it understates the true gap.")
    lines.append("- Training time: the sum of the epoch times in `history.csv` (inside `fit`), "
                 "on the backend and machine that trained each run (see its `env.json`).")
    method = next((r["timing_method"] for r in rows if r.get("timing_method")), None)
    if method:
        lines.append(f"- Latency and throughput: {method}")
    return lines


def markdown(report):
    lines = [
        "# Model comparison",
        "",
        f"{len(report['runs'])} runs, ranked by test accuracy. Created {report['created']} by "
        f"`{report['command']}`. Latency and throughput measured with "
        + "; ".join(report["timing_measured_on"]) + ".",
        "",
        *markdown_table(report["runs"]),
        "",
        "## Which model?",
        "",
        *verdict(report["runs"]),
        "",
        "## Read with care",
        "",
        *caveats(report),
        "",
        "![test accuracy vs latency, validation accuracy vs epochs and wall time](models.png)",
        "",
    ]
    return "\n".join(lines)


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def screen_table(rows):
    lines = [f"{'#':>2}  {'run':<40} {'params':>8} {'test acc':>8} {'latency ms':>10}  Pareto"]
    for row in rows:
        lines.append(f"{row['rank']:>2}  {row['run']:<40} {parameter_count(row['parameters']):>8} "
                     f"{fmt(row['test_accuracy']):>8} {fmt(row['latency_ms'], '.2f'):>10}  "
                     f"{'yes' if row['pareto'] else ''}"
                     + ("  (linear probe)" if row.get("training") == "linear probe" else "")
                     + ("" if row["comparable"] else "  (not directly comparable)"))
    return "\n".join(lines)


def write_all(report, histories, out_dir):
    out_dir = Path(out_dir)
    folders.write_json(out_dir / "models.json", report)
    write_csv(report["runs"], out_dir / "models.csv")
    (out_dir / "models.md").write_text(markdown(report))
    plot(report["runs"], histories, out_dir / "models.png")


# ---------------------------------------------------------------- models.png


def plot(rows, histories, path):
    from kerasvit.evaluation import figures

    figure = figures.new_figure(17, 5)
    tradeoff, by_epoch, by_time = figure.subplots(1, 3)
    colours = {row["run_dir"]: f"C{index % 10}" for index, row in enumerate(rows)}
    plot_tradeoff(tradeoff, rows, colours)
    for row in rows:
        plot_validation_curves(by_epoch, by_time, row, histories.get(row["run_dir"]),
                               colours[row["run_dir"]], run_label(row, rows))
    by_epoch.set(title="Validation accuracy per epoch", xlabel="epoch",
                 ylabel="validation accuracy")
    by_time.set(title="Validation accuracy over training time",
                xlabel="training time (min, on the machine that trained it)",
                ylabel="validation accuracy")
    from matplotlib.ticker import MaxNLocator

    # min_n_ticks=1: with runs of one epoch the locator would otherwise fall back to fractions.
    by_epoch.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    for axes in (by_epoch, by_time):
        axes.grid(alpha=0.3)
        if axes.has_data():
            axes.legend(fontsize=7)
    figures.save_figure(figure, path)


def plot_tradeoff(axes, rows, colours):
    """Test accuracy against batch-1 latency; the Pareto front joined by a step line.
    Hollow markers: runs not directly comparable with the others."""
    for row in rows:
        if row["test_accuracy"] is None or row["latency_ms"] is None:
            continue
        colour = colours[row["run_dir"]]
        axes.scatter(row["latency_ms"], row["test_accuracy"], s=70, edgecolors=colour,
                     facecolors=colour if row["comparable"] else "none", zorder=3)
        axes.annotate(run_label(row, rows), (row["latency_ms"], row["test_accuracy"]),
                      xytext=(5, 4), textcoords="offset points", fontsize=8)
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["latency_ms"])
    if front:
        latencies, accuracies = [r["latency_ms"] for r in front], [r["test_accuracy"] for r in front]
        axes.scatter(latencies, accuracies, s=220, facecolors="none", edgecolors="black",
                     linewidths=1, label="Pareto front", zorder=2)
        axes.plot(latencies, accuracies, drawstyle="steps-post", color="black", linestyle="--",
                  linewidth=1, zorder=2)
        axes.legend(fontsize=8, loc="best")
    axes.margins(0.15)  # Room for the labels of the extreme points.
    latencies = [r["latency_ms"] for r in rows if r["latency_ms"]]
    if latencies and max(latencies) > 10 * min(latencies):
        axes.set_xscale("log")
    axes.set(title="Test accuracy vs latency (up and left is better)",
             xlabel="latency per image, batch 1 (ms)", ylabel="test accuracy")
    axes.grid(alpha=0.3)


def plot_validation_curves(by_epoch, by_time, row, history, colour, label):
    if not history or "val_accuracy" not in history:
        return
    accuracy = np.asarray(history["val_accuracy"], dtype=float)
    epochs = np.asarray(history.get("epoch", range(len(accuracy))), dtype=float) + 1
    style = "o-" if row["comparable"] else "o:"
    by_epoch.plot(epochs, accuracy, style, color=colour, label=label, markersize=3)
    if "epoch_time_s" in history:
        minutes = np.cumsum(np.nan_to_num(history["epoch_time_s"])) / 60.0
        by_time.plot(minutes, accuracy, style, color=colour, label=label, markersize=3)

