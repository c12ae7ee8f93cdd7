"""Training and evaluation images/s of a model before and after a change, alternated.

`bench/throughput.py` times one checkout's model and recipe. To see whether a change made
training slower, this runs the throughput bench of an older checkout (its own model code and
default config, `PYTHONPATH` set to it) and of this one, in turn, `--rounds` times, alternating
which goes first, on the same machine: the machine's drift between runs (up to 45% minutes
apart on these CPUs) falls on both sides. It prints, per contender, the median over rounds of
each side and the ratio after / before.

    git worktree add ../before <commit before the change>
    python bench/before_after.py --before-checkout ../before --model cnn \
        --contenders keras-tensorflow-fp32,keras-torch-fp32,keras-jax-fp32 --rounds 3 \
        --json before-after.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
METRICS = ("images_per_s", "eval_images_per_s")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before-checkout", type=Path, required=True,
                        help="a checkout (e.g. a git worktree) of the commit before the change")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--contenders", required=True,
                        help="keras contenders both checkouts' bench knows, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per bench run")
    parser.add_argument("--json", type=Path, help="write every run's figures and the medians here")
    return parser.parse_args(argv)


def bench_once(checkout, args, out):
    """One `bench/throughput.py` run of `checkout`; returns its contenders' figures."""
    command = [sys.executable, str(checkout / "bench" / "throughput.py"), "--model", args.model,
               "--contenders", args.contenders, "--steps", str(args.steps), "--rounds", "1",
               "--no-pipeline", "--json", str(out)]
    env = {**os.environ, "PYTHONPATH": str(checkout), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, env=env, cwd=checkout, capture_output=True, text=True)
    if done.returncode or not out.exists():
        raise SystemExit(f"bench of {checkout} failed:\n{done.stderr[-1500:]}")
    report = json.loads(out.read_text())
    figures = {c["name"]: {metric: c.get(metric) for metric in METRICS}
               for c in report["contenders"] if c.get("status") == "ok"}
    return {"figures": figures, "other_cpu_share": report.get("other_cpu_share")}


def medians(runs, side):
    """Per contender and metric, the median over `side`'s runs that timed it."""
    side_runs = [run["figures"] for run in runs if run["side"] == side]
    names = sorted({name for figures in side_runs for name in figures})
    return {name: {metric: statistics.median(figures[name][metric] for figures in side_runs
                                             if name in figures)
                   for metric in METRICS}
            for name in names}


def main(argv=None):
    args = parse_args(argv)
    sides = {"before": args.before_checkout.resolve(), "after": REPO}
    runs = []
    with tempfile.TemporaryDirectory() as work:
        for round_index in range(args.rounds):
            order = ("before", "after") if round_index % 2 == 0 else ("after", "before")
            for side in order:
                out = Path(work) / f"{side}-{round_index}.json"
                run = {"side": side, "round": round_index, **bench_once(sides[side], args, out)}
                runs.append(run)
                print(f"round {round_index + 1} {side:<6} " + ", ".join(
                    f"{name} {f['images_per_s']:.0f}/{f['eval_images_per_s']:.0f}"
                    for name, f in run["figures"].items()), flush=True)
    before, after = medians(runs, "before"), medians(runs, "after")
    print(f"\nmedians over {args.rounds} rounds (train / eval images/s), after / before:")
    rows = []
    for name in sorted(set(before) & set(after)):
        ratio = {m: after[name][m] / before[name][m] for m in METRICS}
        rows.append({"contender": name, "before": before[name], "after": after[name],
                     "after_over_before": ratio})
        print(f"  {name:<24} before {before[name]['images_per_s']:7.1f} / "
              f"{before[name]['eval_images_per_s']:7.1f}   after {after[name]['images_per_s']:7.1f}"
              f" / {after[name]['eval_images_per_s']:7.1f}   ratio {ratio['images_per_s']:.2f} "
              f"/ {ratio['eval_images_per_s']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "runs": runs, "medians": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
