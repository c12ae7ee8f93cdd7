"""The figures of an evaluation and a run (matplotlib, Agg): confusion matrix,
per-class accuracy, training curves, sample and mistake grids."""

import csv
import io
from pathlib import Path

import numpy as np

from kerasvit.evaluation import classification

# Curves drawn from history.csv: metric name -> panel title.
CURVE_METRICS = {"loss": "loss", "accuracy": "accuracy", "f1": "macro F1"}


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
    fractions = classification.normalise_rows(matrix)
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
    chosen = classification.most_confident_mistakes(labels, probabilities, count)
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
