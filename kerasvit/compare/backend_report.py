"""Tables and charts of a backend comparison: results.json/.csv/.md, compare.png, the screen.

Works on plain dicts (what the workers wrote), so it needs neither keras nor a backend.
"""

import csv
import os
import platform
import textwrap
from pathlib import Path

import numpy as np

from kerasvit.runs import environment, folders

METHOD = {
    "import_build_s": "seconds from spawning the worker to `import keras` done (Python start, "
                      "keras and its backend framework; TensorFlow's import counts only on the "
                      "tensorflow backend), plus building the model",
    "first_step_s": "the first training step of the first seed, from the epoch's start until "
                    "its loss is read back (device synced): tracing and compilation included",
    "train_images_per_s": "batch size / median interval between training step ends (the "
                          "batch fetch included, on every backend); the device is synced at "
                          "each step end by reading the loss; the first 3 steps of each seed "
                          "(fewer in tiny runs) are excluded as warm-up",
    "eval_images_per_s": "batch size / median test-batch time, device synced, the first "
                         "(compiling) batch excluded",
    "peak_rss_mb": "peak resident memory (ru_maxrss) of the training worker process, "
                   "CIFAR-10 arrays (~180 MB) included",
    "accuracy": "validation accuracy after the last epoch and test accuracy; mean +- sample "
                "std over seeds",
    "other_cpu_load": "share of the machine's CPU used by other processes while the "
                      "backend's worker ran (system busy time minus the worker's own)",
    "load_check": "the first seed's model.keras from each backend, loaded (compile=False) in "
                  "each backend: max |softmax difference| from the saving backend's own "
                  "predictions on the probe test images; 'ok' means every other backend "
                  "loads it and stays within 1e-4 (2e-2 with mixed precision)",
}
CSV_FIELDS = (
    "backend", "status", "error", "backend_version", "device", "jit_compile", "mixed_precision",
    "import_build_s", "first_step_s", "median_step_s", "steps_measured", "train_images_per_s",
    "eval_images_per_s", "peak_rss_mb", "val_accuracy_mean", "val_accuracy_std",
    "test_accuracy_mean", "test_accuracy_std", "loads_elsewhere", "max_abs_prob_diff_elsewhere",
    "wall_s", "other_cpu_load",
)


def machine_info():
    return {"cpu": environment.cpu_model(), "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version()}


def summarise(result, batch_size, checks_as_saver):
    """One backend's row: the worker's raw result turned into the reported figures."""
    row = {"status": result["status"], "error": result.get("error"),
           "wall_s": result.get("wall_s"), "other_cpu_load": result.get("other_cpu_load"),
           "log": result.get("log")}
    if result["status"] != "ok":
        return row
    env = result["env"]
    row.update({
        "backend_version": env["versions"].get(env["backend"]),
        "device": env.get("device_kind"),
        "jit_compile": result["jit_compile"],
        "mixed_precision": result["mixed_precision"],
        "import_build_s": result["import_build_s"],
        "first_step_s": result["first_step_s"],
        "median_step_s": result["median_step_s"],
        "steps_measured": result["steps_measured"],
        "train_images_per_s": per_second(batch_size, result["median_step_s"]),
        "eval_images_per_s": per_second(batch_size, result["median_eval_batch_s"]),
        "peak_rss_mb": result["peak_rss_mb"],
        "train_images": result["train_images"],
        "test_images": result["test_images"],
        "val_accuracy": mean_std(result["val_accuracy"]),
        "test_accuracy": mean_std(result["test_accuracy"]),
    })
    tolerance = MIXED_PRECISION_TOLERANCE if result["mixed_precision"] else FLOAT32_TOLERANCE
    row.update(summarise_load_checks(result["env"]["backend"], checks_as_saver or {}, tolerance))
    return row


def per_second(batch_size, seconds):
    return batch_size / seconds if seconds else None


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "values": []}
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"mean": float(np.mean(values)), "std": std, "values": values}


# Largest probability difference still called "predicts the same": float32 kernels differ
# by ~1e-7 between backends; bfloat16 keeps only ~3 significant digits.
FLOAT32_TOLERANCE = 1e-4
MIXED_PRECISION_TOLERANCE = 2e-2


def summarise_load_checks(saved_by, checks, tolerance=FLOAT32_TOLERANCE):
    """How the model saved by `saved_by` fared when loaded in the other backends."""
    others = {loaded_in: check for loaded_in, check in checks.items() if loaded_in != saved_by}
    failed = sorted(loaded_in for loaded_in, check in others.items() if "error" in check)
    diffs = [check["max_abs_prob_diff"] for check in others.values() if "error" not in check]
    differ = sorted(loaded_in for loaded_in, check in others.items()
                    if "error" not in check and check["max_abs_prob_diff"] > tolerance)
    if failed:
        verdict = "fails in " + ", ".join(failed)
    elif differ:
        verdict = "differs in " + ", ".join(differ)
    elif not others:
        verdict = "no other backend"
    else:
        verdict = "ok"
    return {"loads_elsewhere": verdict,
            "max_abs_prob_diff_elsewhere": max(diffs) if diffs else None}


def progress_line(result):
    if result["status"] != "ok":
        return f"{result['status'].upper()} ({result.get('error')})"
    test = mean_std(result["test_accuracy"])["mean"]
    return f"ok in {result['wall_s']:.0f} s (test accuracy {test:.3f})"


def check_progress_line(result):
    if result["status"] != "ok":
        return f"FAILED ({result.get('error')})"
    failed = [name for name, check in result["loaded"].items() if "error" in check]
    return "loads all" if not failed else "cannot load the model of " + ", ".join(failed)


def fmt(value, spec=".0f"):
    return "-" if value is None else format(value, spec)


def fmt_accuracy(stats):
    if stats["mean"] is None:
        return "-"
    if stats["std"] is None:
        return f"{stats['mean']:.3f}"
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


TABLE_COLUMNS = ("backend", "import+build s", "1st step s", "train img/s", "eval img/s",
                 "peak MB", "val acc", "test acc", "loads elsewhere (max |Δp|)")


def table_cells(backend, row):
    if row["status"] != "ok":
        return [backend, f"{row['status'].upper()}: {row.get('error')}"]
    loads = row["loads_elsewhere"]
    if row["max_abs_prob_diff_elsewhere"] is not None:
        loads += f" ({row['max_abs_prob_diff_elsewhere']:.1e})"
    return [backend, fmt(row["import_build_s"], ".1f"), fmt(row["first_step_s"], ".2f"),
            fmt(row["train_images_per_s"]), fmt(row["eval_images_per_s"]),
            fmt(row["peak_rss_mb"]), fmt_accuracy(row["val_accuracy"]),
            fmt_accuracy(row["test_accuracy"]), loads]


def screen_table(report):
    """Fixed-width table for the terminal; a failed backend's error spans the row."""
    rows = [table_cells(b, report["results"][b]) for b in report["backends"]]
    full_rows = [r for r in rows if len(r) == len(TABLE_COLUMNS)]
    widths = [max(len(str(r[i])) for r in [TABLE_COLUMNS, *full_rows])
              for i in range(len(TABLE_COLUMNS))]
    widths[0] = max(len(r[0]) for r in [TABLE_COLUMNS, *rows])
    lines = ["  ".join(c.ljust(w) for c, w in zip(TABLE_COLUMNS, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for cells in rows:
        if len(cells) == len(TABLE_COLUMNS):
            lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
        else:
            lines.append(cells[0].ljust(widths[0]) + "  " + cells[1][:110])
    lines.append(f"train img/s: {report['method']['train_images_per_s']}.")
    lines += busy_warnings(report)
    return "\n".join(lines)


# Above this share of the CPU taken by other processes, a backend's timings are suspect.
BUSY_THRESHOLD = 0.10


def busy_warnings(report):
    warnings = []
    for backend in report["backends"]:
        load = report["results"][backend].get("other_cpu_load")
        if load is not None and load > BUSY_THRESHOLD:
            warnings.append(f"WARNING: other processes used {load:.0%} of the CPU during the "
                            f"{backend} run; its timings are not comparable. Rerun on an idle machine.")
    return warnings


def markdown_table(report):
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for backend in report["backends"]:
        cells = table_cells(backend, report["results"][backend])
        cells += [""] * (len(TABLE_COLUMNS) - len(cells))
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return lines


def load_matrix(report):
    checks = report["load_check"]
    if not checks:
        return ["No backend saved a model, so nothing was load-checked."]
    loaded_in = list(checks)
    lines = ["| saved by \\ loaded in | " + " | ".join(loaded_in) + " |",
             "|" + "---|" * (len(loaded_in) + 1)]
    for saved_by, row in checks.items():
        cells = [row[b].get("error", "").replace("|", "\\|")[:80] or
                 f"{row[b]['max_abs_prob_diff']:.1e}" for b in loaded_in]
        lines.append(f"| {saved_by} | " + " | ".join(cells) + " |")
    return lines


def run_settings(report):
    config = report["config"]
    first_ok = next((r for r in report["results"].values() if r["status"] == "ok"), {})
    return (f"model `{report['model']}`, {config['epochs']} epoch(s), batch {config['batch_size']}, "
            f"{first_ok.get('train_images', '?')} training / {first_ok.get('test_images', '?')} "
            f"test images, steps per epoch {config['steps_per_epoch'] or 'all'}, "
            f"seeds {report['seeds']}, mixed precision {config['mixed_precision']}, "
            f"jit_compile {config['jit_compile']}")


def markdown(report):
    machine = report["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in report["versions"].items()
                         if version)
    lines = [
        f"# Backend comparison: {report['model']}",
        "",
        f"`{report['command']}` ({report['created']})",
        "",
        f"- Run: {run_settings(report)}",
        f"- Machine: {machine['cpu']}, {machine['cpu_count']} cores, {machine['platform']}, "
        f"Python {machine['python']}",
        f"- Versions: {versions}",
        "",
        *markdown_table(report),
        "",
        *[f"**{line}**\n" for line in busy_warnings(report)],
        "## Do the saved models agree across backends?",
        "",
        "Max |softmax difference| on the probe images (or the loading error):",
        "",
        *load_matrix(report),
        "",
        "## How each figure was measured",
        "",
        *[f"- **{name}**: {text}." for name, text in report["method"].items()],
        "",
        "Backends ran one after another, each in its own process; worker logs are in "
        "`backends/<backend>/`.",
    ]
    return "\n".join(lines) + "\n"


def write_csv(report, path):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for backend in report["backends"]:
            row = dict(report["results"][backend], backend=backend)
            for name in ("val_accuracy", "test_accuracy"):
                stats = row.pop(name, None) or {}
                row[f"{name}_mean"] = stats.get("mean")
                row[f"{name}_std"] = stats.get("std")
            writer.writerow(row)


CHARTS = (
    ("train_images_per_s", "training throughput (images/s)"),
    ("first_step_s", "first (compiling) step (s)"),
    ("peak_rss_mb", "peak resident memory (MB)"),
    ("test_accuracy", "test accuracy"),
)


def plot(report, path):
    import matplotlib

    matplotlib.use("Agg")  # Files only; never needs a display.
    import matplotlib.pyplot as plt

    backends = report["backends"]
    figure, axes = plt.subplots(2, 2, figsize=(10, 7))
    for axis, (key, title) in zip(axes.flat, CHARTS):
        values, errors = [], []
        for backend in backends:
            value = report["results"][backend].get(key)
            if isinstance(value, dict):  # mean +- std over seeds
                value, error = value["mean"], value["std"]
            else:
                error = None
            values.append(value if value is not None else 0.0)
            errors.append(error or 0.0)
        bars = axis.bar(backends, values, yerr=errors if any(errors) else None,
                        color="#4c72b0", capsize=4)
        for bar, backend, value in zip(bars, backends, values):
            status = report["results"][backend]["status"]
            label = (f"{value:,.0f}" if value >= 100 else f"{value:.3g}") if status == "ok" else status
            axis.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                          xytext=(0, 2), textcoords="offset points", ha="center", fontsize=8,
                          color="black" if status == "ok" else "#c44e52")
        axis.set_title(title)
        axis.margins(y=0.15)
    figure.suptitle(f"{report['model']} on {report['machine']['cpu']}: "
                    f"{textwrap.fill(run_settings(report), 120)}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_all(report, out_dir):
    out_dir = Path(out_dir)
    folders.write_json(out_dir / "results.json", report)
    write_csv(report, out_dir / "results.csv")
    (out_dir / "results.md").write_text(markdown(report))
    plot(report, out_dir / "compare.png")
