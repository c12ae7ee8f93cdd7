"""Train a model on CIFAR-10 on whichever backend KERAS_BACKEND names.

    KERAS_BACKEND=torch python -m kerasvit.train --model cnn --epochs 5
    KERAS_BACKEND=jax python -m kerasvit.train --model vit_b16 --preset path/to/preset
    KERAS_BACKEND=jax python -m kerasvit.train --model pretrained --preset resnet_18_imagenet --finetune linear
    python -m kerasvit.train --resume runs/cnn-torch-20261122-101500

Flow: flags -> config, sizes, output folder (checked, no keras yet) -> data -> model ->
run folder (--resume: the newest backup restored) -> fit -> test evaluation -> model.keras +
metrics.json. A kill at any moment loses at most the epoch in progress: see README
"Reliability".
"""

import time
from pathlib import Path

# The time budget counts from here: the interpreter start before it takes well under a second.
PROCESS_START = time.time()

from kerasvit import cli, distribution  # noqa: E402
from kerasvit.config import (  # noqa: E402
    JIT_CHOICES,
    PRECISION_CHOICES,
    ConfigError,
    check_model_args,
    config_path_for_model,
    load_config_file,
    resolve,
    split_override,
)
from kerasvit.data import cifar  # noqa: E402
from kerasvit.errors import UserError  # noqa: E402
from kerasvit.models import MODEL_NAMES, pretrained, vit_b16  # noqa: E402
from kerasvit.runs import folders, loading  # noqa: E402
from kerasvit.training import tracking  # noqa: E402

PROG = "kerasvit.train"

# Flags that are shortcuts for config keys: flag dest -> config key.
FLAG_KEYS = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "learning_rate": "learning_rate",
    "subset_per_class": "subset_per_class",
    "test_per_class": "test_per_class",
    "data_dir": "data_dir",
    "seed": "seed",
    "mixed_precision": "mixed_precision",
    "jit_compile": "jit_compile",
    "preset": "model_args.preset",
    "finetune": "model_args.finetune",
    "distribute": "distribute",
    "time_budget": "time_budget_minutes",
    "tta": "test_time_augmentation",
}
# Flags for the keras-hub preset models only.
PRESET_FLAGS = ("preset", "finetune")
PRESET_MODELS = ("vit_b16", "pretrained")


def parse_args(argv=None):
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODEL_NAMES, help="model to train (loads configs/<model>.toml)")
    parser.add_argument("--config", help="experiment file (TOML); default configs/<model>.toml")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--subset-per-class", type=int, help="N training images per class")
    parser.add_argument("--test-per-class", type=int,
                        help="test on the first N test images of each class (default: all)")
    parser.add_argument("--data-dir", help="TFDS data folder (default: $TFDS_DATA_DIR)")
    parser.add_argument("--run-dir", help="output folder (default: runs/<model>-<backend>-<time>)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--preset", help="vit_b16, pretrained: keras-hub preset name or local "
                                         "preset folder")
    parser.add_argument("--finetune", choices=("full", "linear"),
                        help="vit_b16, pretrained: full fine-tune or linear probe (frozen backbone)")
    parser.add_argument("--mixed-precision", nargs="?", const="on", choices=PRECISION_CHOICES,
                        help="bfloat16 compute: on, off, or auto (the default: on where this "
                             "machine runs it natively and faster)")
    parser.add_argument("--jit-compile", choices=JIT_CHOICES,
                        help="compile the train step (XLA; torch.compile on torch): on, off, "
                             "or auto (the default: per backend and device, what the bench "
                             "measured fastest; env.json records the pick and why)")
    parser.add_argument("--time-budget", type=float, metavar="MINUTES",
                        help="choose the epochs so that the whole run (test included) ends "
                             "within MINUTES of wall time; replaces --epochs")
    parser.add_argument("--tta", action="store_true", default=None,
                        help="also report test accuracy averaged over each image and its mirror")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set model_args.num_layers=8")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run in its folder")
    parser.add_argument("--wandb", action="store_true",
                        help="also track the run with Weights & Biases (WANDB_* variables "
                             "apply; WANDB_MODE=offline logs into <run>/wandb/)")
    distribution.add_flags(parser)
    return parser.parse_args(argv)


def resolve_config(args):
    """Config file, then flags, then --set overrides; checked, before keras is imported."""
    flag_values = {key: getattr(args, dest) for dest, key in FLAG_KEYS.items()}
    config = resolve(args.config, args.model, flag_values, args.set)
    for dest in PRESET_FLAGS:
        if getattr(args, dest) is not None and config.model not in PRESET_MODELS:
            raise ConfigError(f"--{dest} applies only to --model {' or '.join(PRESET_MODELS)}, "
                              f"not {config.model}")
    if args.finetune == "linear" and not given(args, "learning_rate"):
        use_linear_probe_rate(config, args)
    if config.time_budget_minutes and given(args, "epochs"):
        raise ConfigError("pass either --epochs or --time-budget, not both: the time budget "
                          "chooses the number of epochs")
    return config


def given(args, key):
    """Whether the command line sets config `key`, by its flag or by --set."""
    flag = next((dest for dest, name in FLAG_KEYS.items() if name == key), None)
    return (flag is not None and getattr(args, flag) is not None) or any(
        split_override(override)[0] == key for override in args.set)


def use_linear_probe_rate(config, args):
    """`--finetune linear` on a config written for a full fine-tune: its learning rate is a
    fine-tune's, far too small for a head alone, so the probe's rate replaces it."""
    written = load_config_file(args.config or config_path_for_model(config.model))
    if written.model_args.get("finetune") != "linear":
        config.learning_rate = pretrained.LINEAR_PROBE_LEARNING_RATE


def main(argv=None):
    args = parse_args(argv)
    backend = cli.check_backend(PROG)
    try:
        args.hosts = distribution.hosts_from(args)
        if args.resume:
            args.resume = distribution.path_for_process(args.resume, args.hosts)
            config = loading.load_resume_config(args.resume)
            folders.check_can_create(args.resume, flag="--resume folder")
        else:
            config = resolve_config(args)
            args.run_dir = distribution.path_for_process(args.run_dir, args.hosts)
            folders.refuse_existing_run_dir(args.run_dir)
            folders.check_can_create(args.run_dir or folders.RUNS_ROOT)
        cifar.check_sizes(config)
        if config.model == "vit_b16":
            vit_b16.check_preset_folder(config.model_args.get("preset", vit_b16.DEFAULT_PRESET))
        elif config.model == "pretrained":
            pretrained.check_preset_folder(config.model_args.get("preset", pretrained.DEFAULT_PRESET))
        distribution.check_request(config.distribute, backend, args.hosts)
        if args.wandb:
            tracking.check_available()
        with cli.sigterm_as_interrupt():
            cli.import_tensorflow_quietly()
            return run(config, backend, args)
    except folders.WriteError as error:  # e.g. config.json on a full disk
        cli.fail(PROG, f"{error}; free some space there or choose another --run-dir")
    except UserError as error:
        cli.fail(PROG, str(error))
    except KeyboardInterrupt as interrupt:  # before the run folder existed
        cli.fail(PROG, f"interrupted by {cli.interrupt_signal(interrupt)} before training "
                       "started; nothing to resume", code=cli.interrupt_exit_code(interrupt))


def run(config, backend, args):
    started = time.time()
    # Data first: a missing dataset or a subset it cannot give is reported before the
    # (slow) keras import.
    splits = cifar.load_splits(config.data_dir, config.validation_size, config.subset_per_class,
                               config.test_per_class)
    if config.test_images:
        splits["test"] = tuple(array[:config.test_images] for array in splits["test"])
    from kerasvit import models
    from kerasvit.models import layouts

    check_model_args(config, models.get_spec(config.model).builder)
    import keras

    from kerasvit.training import precision, recipe
    from kerasvit.training import run as training_run

    keras.utils.set_random_seed(config.seed)
    distributed = distribution.setup(config.distribute, config.batch_size, args.hosts)
    # After the distribution setup: "auto" lists the devices, which on JAX must come after
    # jax.distributed.initialize.
    chosen_precision = precision.set_precision(config.mixed_precision, backend)
    print(f"mixed precision {'on' if chosen_precision['enabled'] else 'off'} "
          f"({chosen_precision['reason']})")
    chosen_jit = recipe.jit_compile_choice(config.jit_compile, backend)
    print(f"jit_compile {chosen_jit['value']} ({chosen_jit['reason']})")
    model = models.build_model(config.model, **config.model_args)
    chosen_layout = layouts.layout_choice(model, config.model_args.get("data_format", "auto"))
    if chosen_layout:
        print(f"image layout {chosen_layout['value']} ({chosen_layout['reason']})")
    plan = resumed_at = None
    if args.resume:  # a resumed run keeps its epochs
        run_dir = Path(args.resume)
        resumed_at = training_run.reopen_run_dir(run_dir, config, backend)
    else:
        if config.time_budget_minutes:
            plan = training_run.plan_for_budget(config, splits, backend, PROCESS_START)
        run_dir = training_run.create_run_dir(config, backend, args.run_dir, args.hosts,
                                              distributed, chosen_precision, chosen_jit,
                                              chosen_layout)
    if plan:
        folders.write_json(run_dir / "budget.json", plan)
    print(f"run folder: {run_dir}  (model {config.model}, backend {backend}, "
          f"{len(splits['train'][0])} train / {len(splits['validation'][0])} validation images)")
    if note := distribution.evaluation_note(splits, config.batch_size):
        print(note)
    tracker = tracking.WandbTracker(run_dir, config, backend) if args.wandb else None
    try:
        try:
            metrics = training_run.train_and_save(model, config, splits, backend, run_dir,
                                                  started, PROCESS_START, resumed_at, plan,
                                                  tracker)
        except BaseException:
            if tracker:
                tracker.abort()
            raise
    except KeyboardInterrupt as interrupt:
        cli.fail(PROG, f"interrupted by {cli.interrupt_signal(interrupt)}; "
                       f"{training_run.saved_epochs(run_dir, config)}. Resume with: "
                       f"{resume_command(run_dir, backend)}",
                 code=cli.interrupt_exit_code(interrupt))
    except folders.WriteError as error:
        cli.fail(PROG, f"{error}; free some space there (or make it writable), then resume "
                       f"with: {resume_command(run_dir, backend)}")
    print_summary(run_dir, metrics)
    return run_dir


def resume_command(run_dir, backend):
    return f"KERAS_BACKEND={backend} python -m kerasvit.train --resume {cli.shell_quote(run_dir)}"


def budget_note(metrics):
    if "time_budget_s" not in metrics:
        return ""
    process_s, budget_s = metrics["process_wall_time_s"], metrics["time_budget_s"]
    verdict = f"over by {process_s - budget_s:.0f} s" if process_s > budget_s else "within it"
    return f"  (whole process {process_s:.0f} s of a {budget_s:.0f} s budget: {verdict})"


def print_summary(run_dir, metrics):
    best_val = metrics["best_val_accuracy"]
    speed = metrics["train_images_per_s"]
    lines = [
        "",
        f"  run folder        {run_dir}",
        f"  backend           {metrics['backend']}",
        f"  best val accuracy {best_val:.4f}" if best_val is not None else "  best val accuracy -",
        f"  test accuracy     {metrics['test_accuracy']:.4f}  (top-5 {metrics['test_top5_accuracy']:.4f}, "
        f"macro F1 {metrics['test_f1_macro']:.4f}, loss {metrics['test_loss']:.4f})",
        f"  test accuracy TTA {metrics['test_accuracy_tta']:.4f}  ({metrics['tta_views']} TTA)"
        if "test_accuracy_tta" in metrics else None,
        f"  train speed       {speed:.0f} images/s" if speed else "  train speed       -",
        f"  wall time         {metrics['wall_time_s']:.0f} s{budget_note(metrics)}",
    ]
    print("\n".join(line for line in lines if line is not None))


if __name__ == "__main__":
    main()
