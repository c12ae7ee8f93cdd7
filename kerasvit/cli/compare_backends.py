"""Run the same training job on TensorFlow, JAX and PyTorch and measure them side by side.

    python -m kerasvit.compare_backends --model vit --epochs 2
    python -m kerasvit.compare_backends --model cnn --backends jax,torch --subset-per-class 500 --seeds 3

This module parses and checks the flags; kerasvit.compare.backends runs the workers and
kerasvit.compare.backend_report writes the results. It never imports keras.
"""

import shlex
import sys

from kerasvit import cli
from kerasvit.compare import backend_report, backends
from kerasvit.config import PRECISION_CHOICES, ConfigError, resolve
from kerasvit.errors import UserError
from kerasvit.models import MODEL_NAMES
from kerasvit.runs import folders

PROG = "kerasvit.compare_backends"
# Flags that are shortcuts for config keys: flag dest -> config key.
FLAG_KEYS = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "subset_per_class": "subset_per_class",
    "steps_per_epoch": "steps_per_epoch",
    "mixed_precision": "mixed_precision",
    "jit_compile": "jit_compile",
    "seed": "seed",
    "data_dir": "data_dir",
}


def parse_args(argv=None):
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODEL_NAMES, help="model to compare (loads configs/<model>.toml)")
    parser.add_argument("--config", help="experiment file (TOML); default configs/<model>.toml")
    parser.add_argument("--backends", default=",".join(cli.BACKENDS),
                        help="comma-separated backends, run in this order (default: all three)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--subset-per-class", type=int, help="N training images per class")
    parser.add_argument("--steps-per-epoch", type=int, help="cap each epoch at N steps (quick runs)")
    parser.add_argument("--test-images", type=int, default=0,
                        help="evaluate on the first N test images (default: all 10,000)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="train N times per backend with seeds seed..seed+N-1 (accuracy mean +- std)")
    parser.add_argument("--seed", type=int, help="first seed (default: the config's)")
    parser.add_argument("--mixed-precision", nargs="?", const="on", choices=PRECISION_CHOICES,
                        help="bfloat16 compute: on, off, or auto (on where each backend runs it faster)")
    parser.add_argument("--jit-compile", choices=("on", "off", "auto"),
                        help="XLA / torch.compile; auto = on for JAX only (default: the config's)")
    parser.add_argument("--probe-images", type=int, default=64,
                        help="test images used to check that saved models predict the same elsewhere")
    parser.add_argument("--data-dir", help="TFDS data folder (default: $TFDS_DATA_DIR)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set validation_size=1000")
    parser.add_argument("--out", default=str(folders.RUNS_ROOT),
                        help="folder in which compare-<model>-<time>/ is created (default: runs)")
    return parser.parse_args(argv)


def resolve_config(args):
    """Config file, then flags, then --set overrides; checked before any worker starts."""
    flag_values = {key: getattr(args, dest) for dest, key in FLAG_KEYS.items()}
    return resolve(args.config, args.model, flag_values, args.set)


def parse_backends(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigError("--backends is empty; name at least one of " + ", ".join(cli.BACKENDS))
    for name in names:
        if name not in cli.BACKENDS:
            raise ConfigError(f"unknown backend {name!r} in --backends; choose from {', '.join(cli.BACKENDS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--backends names a backend twice: {text!r}")
    return names


def check_counts(args):
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
    if args.test_images < 0:
        raise ConfigError(f"--test-images must be >= 0, got {args.test_images}")
    if args.probe_images < 1:
        raise ConfigError(f"--probe-images must be at least 1, got {args.probe_images}")


def main(argv=None):
    args = parse_args(argv)
    cli.quiet_framework_logs()  # Inherited by the workers.
    try:
        config = resolve_config(args)
        backend_names = parse_backends(args.backends)
        check_counts(args)
        out_dir = folders.new_run_dir("compare", config.model, root=args.out)
    except (ConfigError, folders.RunDirError) as error:
        cli.fail(PROG, str(error))
    seeds = [config.seed + i for i in range(args.seeds)]
    folders.write_json(out_dir / "config.json", config.to_dict())
    print(f"comparing {config.model} on {', '.join(backend_names)} ({len(seeds)} seed(s)); "
          f"output and worker logs in {out_dir}", flush=True)

    try:
        results = backends.run_all_training(backend_names, config, seeds, args.test_images,
                                            args.probe_images, out_dir)
        load_checks = backends.run_load_checks(results, out_dir)
    except UserError as error:  # the config fails the same way on every backend
        cli.fail(PROG, str(error))
    except KeyboardInterrupt:
        cli.fail(PROG, f"interrupted; worker logs so far are in {out_dir}", code=130)

    command = shlex.join(["python", "-m", PROG, *(sys.argv[1:] if argv is None else argv)])
    report = backends.build_report(config, seeds, backend_names, results, load_checks, command)
    backend_report.write_all(report, out_dir)
    print()
    print(backend_report.screen_table(report))
    print(f"\nresults: {out_dir}/results.md (also .json, .csv, compare.png)")
    if not any(result["status"] == "ok" for result in results.values()):
        cli.fail(PROG, f"no backend finished; the errors are in the table above and in {out_dir}",
                 code=1)
    return out_dir


if __name__ == "__main__":
    main()
