"""Which model should I use? Rank trained runs side by side, whatever backend made them.

    python -m kerasvit.compare_models runs/cnn-* runs/vit-* runs/resnet18-* runs/mobilenet-*
    KERAS_BACKEND=torch python -m kerasvit.compare_models runs/* --reevaluate

This module parses and checks the flags; kerasvit.compare.leaderboard evaluates the runs
that need it, ranks them and writes runs/models-<time>/.
"""

import shlex
import sys

from kerasvit import cli
from kerasvit.compare import leaderboard
from kerasvit.errors import UserError
from kerasvit.evaluation import summary
from kerasvit.runs import folders

PROG = "kerasvit.compare_models"


def parse_args(argv=None):
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by kerasvit.train")
    parser.add_argument("--out", default=str(folders.RUNS_ROOT),
                        help="folder in which models-<time>/ is created (default: runs)")
    parser.add_argument("--reevaluate", action="store_true",
                        help="evaluate every run again on this backend and machine, so that all "
                             "latencies are measured alike (default: only runs never evaluated)")
    parser.add_argument("--test-images", type=int, default=0, metavar="N",
                        help="when evaluating: the first N test images only (default: all 10,000)")
    parser.add_argument("--timing-repeats", type=int, default=10, metavar="N",
                        help="when evaluating: timed batches for throughput (default 10)")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="when evaluating: prediction and throughput batch size (default 256)")
    parser.add_argument("--data-dir", help="TFDS data folder (default: each run's, else $TFDS_DATA_DIR)")
    args = parser.parse_args(argv)
    for flag, value, minimum in (("--test-images", args.test_images, 0),
                                 ("--timing-repeats", args.timing_repeats, 1),
                                 ("--batch-size", args.batch_size, 1)):
        if value < minimum:
            cli.fail(PROG, f"{flag} must be at least {minimum}, got {value}")
    return args


def main(argv=None):
    args = parse_args(argv)
    backend = cli.check_backend(PROG)
    try:
        run_dirs = [leaderboard.check_run_folder(path)
                    for path in leaderboard.unique_paths(args.runs)]
        to_evaluate = [run_dir for run_dir in run_dirs
                       if args.reevaluate or leaderboard.evaluation_of(run_dir) is None]
        if to_evaluate:
            cli.import_tensorflow_quietly()
        for run_dir in to_evaluate:  # Each prints what it evaluates, then its summary.
            print(summary.screen_summary(*leaderboard.evaluate_run(run_dir, args, backend)))
        rows, histories = leaderboard.collect_rows(run_dirs)
        out_dir = leaderboard.new_report_dir(args.out)
    except UserError as error:
        cli.fail(PROG, str(error))
    command = shlex.join(["python", "-m", PROG, *(sys.argv[1:] if argv is None else argv)])
    report = leaderboard.build_report(rows, command)
    leaderboard.write_all(report, histories, out_dir)
    print(leaderboard.screen_table(report["runs"]))
    print(f"\nreport: {out_dir / 'models.md'} (also models.csv, models.json, models.png)")
    return out_dir


if __name__ == "__main__":
    main()
