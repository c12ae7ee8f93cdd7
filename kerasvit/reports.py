"""Metrics and figures from predictions: shared by evaluate, compare and the demo.

Everything here works on numpy arrays (labels, logits, probabilities, uint8 images) and never
imports keras, so it runs the same whatever backend produced the predictions. Figures are
drawn on `matplotlib.figure.Figure` objects (no pyplot, no global state, no display needed).
"""

import csv
import io
from pathlib import Path

import numpy as np

# Curves drawn from history.csv: metric name -> panel title.
CURVE_METRICS = {"loss": "loss", "accuracy": "accuracy", "f1": "macro F1"}


# ---------------------------------------------------------------- metrics


def softmax(logits):
    """Row-wise softmax in float64 (stable: the row maximum is subtracted first)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def cross_entropy(labels, logits):
    """Mean categorical cross-entropy of integer `labels` under `logits` (no label smoothing)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def top_k_accuracy(labels, probabilities, k):
    """Fraction of rows whose true label is among the `k` highest probabilities."""
    top = np.argsort(-np.asarray(probabilities), axis=-1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == np.asarray(labels)[:, None], axis=-1)))


def classification_metrics(labels, probabilities, class_names):
    """Accuracy, top-5, macro and per-class precision/recall/F1, confusion matrix and the
    scikit-learn classification report, as plain JSON-ready Python values."""
    from sklearn import metrics

    labels = np.asarray(labels)
    predicted = np.argmax(probabilities, axis=-1)
    class_ids = list(range(len(class_names)))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        labels, predicted, labels=class_ids, zero_division=0
    )
    matrix = metrics.confusion_matrix(labels, predicted, labels=class_ids)
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            # Per-class accuracy is the fraction of that class's images classified right,
            # which is its recall; kept under its own name for readers who look for it.
            "accuracy": float(recall[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "test_images": int(len(labels)),
        "accuracy": float(np.mean(predicted == labels)),
        "top5_accuracy": top_k_accuracy(labels, probabilities, min(5, len(class_names))),
        "precision_macro": float(np.mean(precision)),
        "recall_macro": float(np.mean(recall)),
        "f1_macro": float(np.mean(f1)),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "classification_report": metrics.classification_report(
            labels, predicted, labels=class_ids, target_names=list(class_names),
            digits=4, zero_division=0,
        ),
    }


def normalise_rows(matrix):
    """Confusion matrix -> fraction of each true class (rows with no images stay zero)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def most_confident_mistakes(labels, probabilities, count):
    """Indices of wrong predictions, most confident first."""
    predicted = np.argmax(probabilities, axis=-1)
    wrong = np.flatnonzero(predicted != np.asarray(labels))
    confidence = np.asarray(probabilities)[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:count]


def read_history(path):
    """history.csv -> {column: list of floats}, or None when the file is missing or empty."""
    path = Path(path)
    if not path.is_file():
        return None
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    columns = {}
    for name in rows[0]:
        values = [float(row[name]) if row.get(name) not in (None, "") else np.nan for row in rows]
        columns[name] = values
    return columns


# ---------------------------------------------------------------- figures


def new_figure(width, height):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_figure(figure, path):
    figure.savefig(path, dpi=100)
    return Path(path)


def figure_png_bytes(figure):
    """The figure as PNG bytes (for TensorBoard images)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def confusion_matrix_figure(matrix, class_names, title="Confusion matrix (row-normalised)"):
    fractions = normalise_rows(matrix)
    figure = new_figure(7.5, 6.5)
    axes = figure.add_subplot()
    image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, label="fraction of the true class")
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    for row in range(fractions.shape[0]):
        for column in range(fractions.shape[1]):
            value = fractions[row, column]
            axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                      color="white" if value > 0.5 else "black")
    return figure


def per_class_accuracy_figure(per_class, overall_accuracy):
    names = list(per_class)
    values = [per_class[name]["accuracy"] for name in names]
    figure = new_figure(8, 4.5)
    axes = figure.add_subplot()
    bars = axes.bar(names, values, color="tab:blue")
    axes.axhline(overall_accuracy, color="tab:red", linestyle="--",
                 label=f"overall {overall_accuracy:.3f}")
    axes.bar_label(bars, fmt="%.2f", fontsize=8)
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("accuracy (recall)")
    axes.set_title("Per-class test accuracy")
    axes.tick_params(axis="x", rotation=45)
    axes.legend(loc="lower right")
    return figure


def training_curves_figure(history):
    """Loss, accuracy and macro F1 per epoch, train and validation, one panel each."""
    from matplotlib.ticker import MaxNLocator

    epochs = np.asarray(history.get("epoch", range(len(next(iter(history.values()))))))
    epochs = epochs + 1  # CSVLogger counts from 0; people count epochs from 1.
    figure = new_figure(13, 4)
    panels = figure.subplots(1, len(CURVE_METRICS))
    for axes, (metric, title) in zip(panels, CURVE_METRICS.items()):
        for prefix, label, style in (("", "train", "o-"), ("val_", "validation", "s--")):
            if prefix + metric in history:
                axes.plot(epochs, history[prefix + metric], style, label=label, markersize=4)
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        if axes.has_data():
            axes.legend()
    return figure


def image_grid_figure(images, titles, colours, columns, title):
    """A grid of uint8 images with one (coloured) caption each."""
    rows = max(1, int(np.ceil(len(images) / columns)))
    figure = new_figure(2.0 * columns, 2.2 * rows + 0.4)
    figure.suptitle(title)
    for index, axes in enumerate(figure.subplots(rows, columns, squeeze=False).flat):
        axes.axis("off")
        if index < len(images):
            axes.imshow(images[index], interpolation="nearest")
            axes.set_title(titles[index], fontsize=8, color=colours[index])
    return figure


def mistakes_figure(images, labels, probabilities, class_names, count=16, columns=4):
    chosen = most_confident_mistakes(labels, probabilities, count)
    predicted = np.argmax(probabilities, axis=-1)
    titles = [f"true {class_names[labels[i]]}\npred {class_names[predicted[i]]} "
              f"{probabilities[i, predicted[i]]:.2f}" for i in chosen]
    return image_grid_figure(images[chosen], titles, ["tab:red"] * len(chosen), columns,
                             "Most confident mistakes")


def samples_figure(images, labels, probabilities, class_names, count=25, columns=5):
    """The first `count` images with prediction and confidence (green right, red wrong)."""
    chosen = np.arange(min(count, len(images)))
    predicted = np.argmax(probabilities, axis=-1)
    titles = [f"{class_names[predicted[i]]} {probabilities[i, predicted[i]]:.2f}\n"
              f"(true {class_names[labels[i]]})" for i in chosen]
    colours = ["tab:green" if predicted[i] == labels[i] else "tab:red" for i in chosen]
    return image_grid_figure(images[chosen], titles, colours, columns, "Test predictions")


def write_figures(out_dir, images, labels, probabilities, metrics, class_names, history=None):
    """Writes every evaluation PNG into `out_dir`; returns {name: path}."""
    out_dir = Path(out_dir)
    figures = {
        "confusion_matrix": confusion_matrix_figure(metrics["confusion_matrix"], class_names),
        "per_class_accuracy": per_class_accuracy_figure(metrics["per_class"], metrics["accuracy"]),
        "mistakes": mistakes_figure(images, labels, probabilities, class_names),
        "samples": samples_figure(images, labels, probabilities, class_names),
    }
    if history is not None:
        figures["training_curves"] = training_curves_figure(history)
    return {name: save_figure(figure, out_dir / f"{name}.png") for name, figure in figures.items()}


# ---------------------------------------------------------------- report.md


def format_value(value, digits=4):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def summary_table(evaluation):
    rows = [
        ("test accuracy", evaluation["accuracy"]),
        ("top-5 accuracy", evaluation["top5_accuracy"]),
        ("macro precision", evaluation["precision_macro"]),
        ("macro recall", evaluation["recall_macro"]),
        ("macro F1", evaluation["f1_macro"]),
        ("test loss (cross-entropy, no label smoothing)", evaluation["loss"]),
        ("test images", evaluation["test_images"]),
        (f"throughput (images/s, batch {evaluation['throughput_batch_size']})",
         f"{evaluation['images_per_s']:.0f}"),
        ("latency per image (ms, batch 1, median)", f"{evaluation['latency_ms']:.2f}"),
    ]
    if "tta" in evaluation:  # Reported apart: TTA costs two forward passes per image.
        rows[2:2] = [("test accuracy with flip TTA (2 passes per image)",
                      evaluation["tta"]["accuracy"]),
                     ("top-5 accuracy with flip TTA", evaluation["tta"]["top5_accuracy"])]
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {name} | {format_value(value)} |" for name, value in rows]
    return lines


def per_class_table(per_class):
    lines = ["| class | precision | recall (= accuracy) | F1 | images |", "|---|---|---|---|---|"]
    for name, row in per_class.items():
        lines.append(f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | "
                     f"{row['f1']:.4f} | {row['support']} |")
    return lines


def training_table(training):
    keys = ("test_accuracy", "test_top5_accuracy", "test_f1_macro", "best_val_accuracy", "epochs",
            "train_images", "train_images_per_s", "wall_time_s", "backend")
    lines = ["| key | value |", "|---|---|"]
    lines += [f"| {key} | {format_value(training[key])} |" for key in keys if key in training]
    return lines


def report_markdown(evaluation, figure_names, training=None):
    """The text of report.md: summary, per-class table, sklearn report and the figures."""
    source = evaluation["trained_backend"] or "unknown"
    lines = [
        f"# Evaluation of `{evaluation['model_path']}`",
        "",
        f"Model `{evaluation['model']}` ({evaluation['parameters']:,} parameters, input "
        f"{evaluation['image_size'][0]}x{evaluation['image_size'][1]}), trained on backend "
        f"`{source}`, evaluated on backend `{evaluation['backend']}` ({evaluation['device']}) "
        f"on {evaluation['evaluated_at']}.",
        "",
        "## Summary",
        "",
        *summary_table(evaluation),
        "",
        f"Throughput: {evaluation['timing_method']}",
        "",
    ]
    if "training_curves" in figure_names:
        lines += ["## Training curves", "", "![training curves](training_curves.png)", ""]
    if training:
        lines += ["## Training run (from metrics.json)", "", *training_table(training), ""]
    lines += [
        "## Per class", "", *per_class_table(evaluation["per_class"]), "",
        "![per-class accuracy](per_class_accuracy.png)", "",
        "![confusion matrix](confusion_matrix.png)", "",
        "## Classification report (scikit-learn)", "", "```",
        evaluation["classification_report"].rstrip(), "```", "",
        "## Predictions", "",
        "Most confident mistakes (true and predicted class, predicted probability):", "",
        "![mistakes](mistakes.png)", "",
        "The first test images with their predictions (green right, red wrong):", "",
        "![samples](samples.png)", "",
    ]
    return "\n".join(lines)
