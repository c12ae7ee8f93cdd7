"""The README's accuracy tables, made from the run folders committed under results/.

    python scripts/results_tables.py            # print the tables
    python scripts/results_tables.py --write    # replace them in README.md

Each finished run (config.json + env.json + metrics.json) is one row, named by the
configs/*.toml file its config matches, with the keys it changed (e.g. `cnn.toml
batch_size=512`). Rows of the same recipe and backend are also summarised over seeds as
mean +- sample standard deviation. Nothing here is typed by hand: rerun after committing a run.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from kerasvit.config import read_config_values  # noqa: E402  (no keras: a cheap import)

RESULTS = REPO / "results"
README = REPO / "README.md"
TABLES = {"cnn": RESULTS / "cnn", "vit": RESULTS / "vit"}  # marker name -> folder of run folders
BEGIN, END = "<!-- results:{} begin (scripts/results_tables.py) -->", "<!-- results:{} end -->"
# Keys that say where or which run, not what recipe.
RUN_KEYS = {"seed", "data_dir", "model_args"}


def finished_runs(folder):
    for run in sorted(Path(folder).iterdir()):
        if all((run / name).is_file() for name in ("config.json", "env.json", "metrics.json")):
            yield run, *(json.loads((run / name).read_text())
                         for name in ("config.json", "env.json", "metrics.json"))


def recipe_name(config):
    """The closest configs/*.toml file, with the keys this run changed from it."""
    best = None
    for path in sorted((REPO / "configs").glob("*.toml")):
        values = read_config_values(path)
        if values.get("model") != config["model"]:
            continue
        changed = [f"{key}={config[key]}" for key in sorted(values)
                   if key not in RUN_KEYS and key in config and config[key] != values[key]]
        base_args, run_args = values.get("model_args", {}), config.get("model_args", {})
        changed += [f"model_args.{key}={run_args.get(key)}"
                    for key in sorted(base_args.keys() | run_args.keys())
                    if run_args.get(key) != base_args.get(key)]
        if best is None or len(changed) < len(best[1]):
            best = (path.name, changed)
    return " ".join([best[0], *best[1]]) if best else config["model"]


def percent(value):
    return "-" if value is None else f"{100 * value:.2f}"


def wall_minutes(metrics):
    """The run's recorded wall time; after a resume, only the part since then."""
    seconds, resumed = metrics.get("wall_time_s"), metrics.get("resumed_after_epochs")
    if seconds is None:
        return "-"
    if resumed and resumed >= metrics["epochs"]:  # resumed to test only
        return f"{seconds / 60:.0f} (test only)"
    since = f" (epochs {resumed + 1}-{metrics['epochs']})" if resumed else ""
    return f"{seconds / 60:.0f}{since}"


def rate(images_per_s):
    return "-" if images_per_s is None else f"{images_per_s:.0f}"


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} +- {100 * statistics.stdev(values):.2f}"


def table(folder):
    runs = list(finished_runs(folder))
    lines = ["| run | recipe | backend | seed | epochs | wall min | train img/s | best val | test "
             "| test TTA |", "|---|---|---|---|---|---|---|---|---|---|"]
    groups = {}
    for run, config, env, metrics in runs:
        recipe = recipe_name(config)
        lines.append(f"| {run.name} | {recipe} | {env['backend']} | {config['seed']} | "
                     f"{metrics['epochs']} | {wall_minutes(metrics)} | "
                     f"{rate(metrics.get('train_images_per_s'))} | "
                     f"{percent(metrics.get('best_val_accuracy'))} | "
                     f"{percent(metrics['test_accuracy'])} | "
                     f"{percent(metrics.get('test_accuracy_tta'))} |")
        groups.setdefault((recipe, env["backend"]), []).append(metrics)
    lines += ["", "| recipe | backend | seeds | test | test TTA |", "|---|---|---|---|---|"]
    for (recipe, backend), group in sorted(groups.items()):
        lines.append(f"| {recipe} | {backend} | {len(group)} | "
                     f"{mean_std([m['test_accuracy'] for m in group])} | "
                     f"{mean_std([m.get('test_accuracy_tta') for m in group])} |")
    return "\n".join(lines)


def blocks():
    return {name: table(folder) for name, folder in TABLES.items()}


def with_tables(text, tables):
    for name, body in tables.items():
        begin, end = BEGIN.format(name), END.format(name)
        if begin not in text or end not in text:
            raise SystemExit(f"README.md has no {begin} ... {end} markers")
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{body}\n{end}{tail}"
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="replace the tables in README.md")
    args = parser.parse_args(argv)
    tables = blocks()
    if args.write:
        README.write_text(with_tables(README.read_text(), tables))
    else:
        print("\n\n".join(f"{name}:\n{body}" for name, body in tables.items()))


if __name__ == "__main__":
    sys.exit(main())
