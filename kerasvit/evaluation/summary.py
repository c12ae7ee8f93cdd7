"""The markdown report of an evaluation: summary, per-class and training tables."""

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
    if "tta" in evaluation:  # Reported apart: TTA costs a forward pass per view.
        rows[2:2] = [("test accuracy with TTA", evaluation["tta"]["accuracy"]),
                     ("top-5 accuracy with TTA", evaluation["tta"]["top5_accuracy"]),
                     ("TTA", evaluation["tta"]["method"])]
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


def screen_summary(out_dir, evaluation):
    """The lines kerasvit.evaluate (and compare_models, per run it evaluates) prints."""
    tta = evaluation.get("tta")
    return "\n".join([
        f"  test accuracy   {evaluation['accuracy']:.4f}  (top-5 {evaluation['top5_accuracy']:.4f}, "
        f"macro F1 {evaluation['f1_macro']:.4f}, loss {evaluation['loss']:.4f})",
        *([f"  with TTA        {tta['accuracy']:.4f}  (top-5 {tta['top5_accuracy']:.4f}, "
           f"macro F1 {tta['f1_macro']:.4f})"] if tta else []),
        f"  throughput      {evaluation['images_per_s']:.0f} images/s "
        f"(batch {evaluation['throughput_batch_size']})",
        f"  latency         {evaluation['latency_ms']:.2f} ms per image (batch 1, median)",
        f"  report          {out_dir / 'report.md'}",
    ])
