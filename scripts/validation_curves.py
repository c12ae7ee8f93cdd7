"""Validation accuracy per epoch of finished or running runs, on one plot (a PNG).

    python scripts/validation_curves.py results/vit/vit-conv-tf-s0 \
        results/budget/vit_fast-torch-60min-seed0 --out results/vit/validation_curves.png \
        --labels "vit.toml (conv stem, 20 epochs), tensorflow" \
                 "old recipe: vit_fast.toml (patch stem, 9 epochs), torch"

Each run folder needs history.csv (written after every epoch, so a run still training can be
plotted too); its label is the folder name with its backend from env.json, unless --labels.
"""

import argparse
import csv
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def read_curve(run):
    with open(run / "history.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("val_accuracy")]
    return [int(row["epoch"]) + 1 for row in rows], [100 * float(row["val_accuracy"]) for row in rows]


def label(run):
    env = run / "env.json"
    backend = json.loads(env.read_text()).get("backend") if env.is_file() else None
    return f"{run.name} ({backend})" if backend and backend not in run.name else run.name


def plot(runs, out, title, labels=None):
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.subplots()
    for run, text in zip(runs, labels or [None] * len(runs)):
        epochs, accuracy = read_curve(run)
        axes.plot(epochs, accuracy, marker="o", markersize=3, label=text or label(run))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation accuracy (%)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.savefig(out, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders with a history.csv")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--title", default="Validation accuracy per epoch (5,000 images)")
    parser.add_argument("--labels", nargs="+", help="legend labels, one per run (default: the "
                                                     "folder name and backend)")
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.runs):
        parser.error(f"--labels needs one label per run: {len(args.runs)} runs, "
                     f"{len(args.labels)} labels")
    missing = [str(run) for run in args.runs if not (run / "history.csv").is_file()]
    if missing:
        parser.error(f"no history.csv in {', '.join(missing)}")
    plot(args.runs, args.out, args.title, args.labels)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
