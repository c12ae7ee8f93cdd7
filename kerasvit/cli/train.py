"""Train a model on CIFAR-10 on whichever backend KERAS_BACKEND names.

    KERAS_BACKEND=torch python -m kerasvit.train --model cnn --epochs 5
    KERAS_BACKEND=jax python -m kerasvit.train --model vit_b16 --preset path/to/preset
    python -m kerasvit.train --resume runs/cnn-torch-20261122-101500

Flow: flags -> config, sizes, output folder (checked, no keras yet) -> data -> model ->
run folder (--resume: the newest backup restored) -> fit -> test evaluation -> model.keras +
metrics.json. A kill at any moment loses at most the epoch in progress: see README
"Reliability".
"""

import time

# The time budget counts from here: the interpreter start before it takes well under a second.
PROCESS_START = time.time()

import json  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402

from kerasvit import cli, distribution
from kerasvit.config import (
    PRECISION_CHOICES,
    ConfigError,
    check_model_args,
    config_from_dict,
    resolve,
    validate,
)
from kerasvit.errors import UserError  # noqa: E402
from kerasvit.runs import environment, folders  # noqa: E402

PROG = "kerasvit.train"

# Flags that are shortcuts for config keys: flag dest -> config key.
FLAG_KEYS = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "learning_rate": "learning_rate",
    "subset_per_class": "subset_per_class",
    "data_dir": "data_dir",
    "seed": "seed",
    "mixed_precision": "mixed_precision",
    "preset": "model_args.preset",
    "finetune": "model_args.finetune",
    "distribute": "distribute",
    "time_budget": "time_budget_minutes",
    "tta": "test_time_augmentation",
}
VIT_B16_ONLY = ("preset", "finetune")


def parse_args(argv=None):
    from kerasvit.models import MODEL_NAMES

    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODEL_NAMES, help="model to train (loads configs/<model>.toml)")
    parser.add_argument("--config", help="experiment file (TOML); default configs/<model>.toml")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--subset-per-class", type=int, help="N training images per class")
    parser.add_argument("--data-dir", help="TFDS data folder (default: $TFDS_DATA_DIR)")
    parser.add_argument("--run-dir", help="output folder (default: runs/<model>-<backend>-<time>)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--preset", help="vit_b16: keras-hub preset name or local preset folder")
    parser.add_argument("--finetune", choices=("full", "linear"), help="vit_b16: full fine-tune or linear probe")
    parser.add_argument("--mixed-precision", nargs="?", const="on", choices=PRECISION_CHOICES,
                        help="bfloat16 compute: on, off, or auto (the default: on where this "
                             "machine runs it natively and faster)")
    parser.add_argument("--time-budget", type=float, metavar="MINUTES",
                        help="choose the epochs so that the whole run (test included) ends "
                             "within MINUTES of wall time; replaces --epochs")
    parser.add_argument("--tta", action="store_true", default=None,
                        help="also report test accuracy averaged over each image and its mirror")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set model_args.num_layers=8")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run in its folder")
    distribution.add_flags(parser)
    return parser.parse_args(argv)


def resolve_config(args):
    """Config file, then flags, then --set overrides; checked, before keras is imported."""
    flag_values = {key: getattr(args, dest) for dest, key in FLAG_KEYS.items()}
    config = resolve(args.config, args.model, flag_values, args.set)
    for dest in VIT_B16_ONLY:
        if getattr(args, dest) is not None and config.model != "vit_b16":
            raise ConfigError(f"--{dest} applies only to --model vit_b16, not {config.model}")
    epochs_given = args.epochs is not None or any(
        override.split("=", 1)[0].strip() == "epochs" for override in args.set)
    if config.time_budget_minutes and epochs_given:
        raise ConfigError("pass either --epochs or --time-budget, not both: the time budget "
                          "chooses the number of epochs")
    return config


def refuse_existing_run_dir(run_dir):
    if run_dir and Path(run_dir).exists():
        raise UserError(
            f"run folder {run_dir} already exists; choose another --run-dir, or pass "
            f"--resume {run_dir} to continue it"
        )


def load_resume(run_dir):
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a folder; pass the folder of an interrupted run "
                          "to --resume")
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"{run_dir} is not a kerasvit run folder (no config.json); "
                          "pass the folder of an interrupted run to --resume")
    if (run_dir / "metrics.json").is_file():
        raise ConfigError(f"run {run_dir} already finished (metrics.json exists); "
                          "start a new run instead of --resume")
    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read {run_dir / 'config.json'} ({type(error).__name__}); "
                          "this run cannot be resumed, start a new one") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{run_dir / 'config.json'} is not a kerasvit config; "
                          "this run cannot be resumed, start a new one")
    return validate(config_from_dict(saved))


# CIFAR-10's sizes, to refuse impossible requests before the data (and keras) are loaded.
CIFAR10_TRAIN_PER_CLASS = 5000
CIFAR10_TEST_IMAGES = 10_000
NUM_CLASSES = 10


def check_sizes(config):
    """Subset, batch and split sizes that CIFAR-10 cannot satisfy. The data loader checks
    the exact per-class counts again; this catches the impossible cases in a second."""
    if config.test_images > CIFAR10_TEST_IMAGES:
        raise ConfigError(f"test_images {config.test_images} is larger than the "
                          f"{CIFAR10_TEST_IMAGES} CIFAR-10 test images; use at most "
                          f"{CIFAR10_TEST_IMAGES} (0 means all)")
    train_total = CIFAR10_TRAIN_PER_CLASS * NUM_CLASSES
    if config.validation_size >= train_total:
        raise ConfigError(f"validation_size {config.validation_size} leaves no training images "
                          f"(CIFAR-10 has {train_total}); use a smaller --set validation_size")
    # A stratified split takes validation_size / 10 images of each class, rounded up at most.
    per_class = CIFAR10_TRAIN_PER_CLASS - math.ceil(config.validation_size / NUM_CLASSES)
    if config.subset_per_class > per_class:
        raise ConfigError(f"subset_per_class {config.subset_per_class} is larger than the "
                          f"{per_class} training images per class available; use at most "
                          f"{per_class}")
    train_images = config.subset_per_class * NUM_CLASSES or train_total - config.validation_size
    if config.batch_size > train_images:
        raise ConfigError(f"batch_size {config.batch_size} is larger than the {train_images} "
                          "training images; lower --batch-size or use more data")


def check_preset_folder(config):
    """vit_b16 with a local preset folder: it must exist, be readable and hold a ViT."""
    from kerasvit.models import vit_b16

    preset = config.model_args.get("preset", vit_b16.DEFAULT_PRESET)
    if config.model != "vit_b16" or not isinstance(preset, str) or not vit_b16.looks_like_path(preset):
        return
    path = Path(preset).expanduser()
    if not path.exists():
        raise vit_b16.PresetError(
            f"preset folder {preset} does not exist; pass a folder made with save_to_preset, "
            f"or a preset name such as {vit_b16.DEFAULT_PRESET}")
    if not path.is_dir():
        raise vit_b16.PresetError(f"preset {preset} is a file; pass the folder that "
                                  "save_to_preset wrote")
    try:
        backbone = json.loads((path / "config.json").read_text())
    except FileNotFoundError:
        raise vit_b16.PresetError(f"{preset} is not a keras-hub preset (no config.json); pass "
                                  "a folder made with save_to_preset") from None
    except PermissionError:
        raise vit_b16.PresetError(f"preset folder {preset} is not readable (permission "
                                  "denied); fix its permissions or pass another --preset") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise vit_b16.PresetError(f"cannot read {path / 'config.json'} ({type(error).__name__}); "
                                  "the preset is damaged, save it again") from None
    name = backbone.get("registered_name", "") if isinstance(backbone, dict) else ""
    if name != "keras_hub>ViTBackbone":
        found = name.split(">")[-1] or "no keras-hub"
        raise vit_b16.PresetError(
            f"preset {preset} holds a {found} model, not a ViT; --model vit_b16 needs a ViT "
            f"preset, e.g. one saved from {vit_b16.DEFAULT_PRESET}")


def main(argv=None):
    args = parse_args(argv)
    backend = cli.check_backend(PROG)
    try:
        args.hosts = distribution.hosts_from(args)
        if args.resume:
            args.resume = distribution.path_for_process(args.resume, args.hosts)
            config = load_resume(args.resume)
            folders.check_can_create(args.resume, flag="--resume folder")
        else:
            config = resolve_config(args)
            args.run_dir = distribution.path_for_process(args.run_dir, args.hosts)
            refuse_existing_run_dir(args.run_dir)
            folders.check_can_create(args.run_dir or folders.RUNS_ROOT)
        check_sizes(config)
        check_preset_folder(config)
        distribution.check_request(config.distribute, backend, args.hosts)
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
    from kerasvit.data import cifar

    # Data first: a missing dataset or a subset it cannot give is reported before the
    # (slow) keras import.
    splits = cifar.load_splits(config.data_dir, config.validation_size, config.subset_per_class)
    if config.test_images:
        splits["test"] = tuple(array[:config.test_images] for array in splits["test"])
    from kerasvit import models
    from kerasvit.training import precision

    spec = models.get_spec(config.model)
    check_model_args(config, spec.builder)
    import keras

    keras.utils.set_random_seed(config.seed)
    distributed = distribution.setup(config.distribute, config.batch_size, args.hosts)
    # After the distribution setup: "auto" lists the devices, which on JAX must come after
    # jax.distributed.initialize.
    chosen_precision = precision.set_precision(config.mixed_precision, backend)
    print(f"mixed precision {'on' if chosen_precision['enabled'] else 'off'} "
          f"({chosen_precision['reason']})")
    model = models.build_model(config.model, **config.model_args)
    plan = None
    if config.time_budget_minutes and not args.resume:  # a resumed run keeps its epochs
        plan = plan_for_budget(config, splits, backend)
    run_dir, resumed_at = open_run_dir(config, backend, args, distributed, chosen_precision)
    if plan:
        folders.write_json(run_dir / "budget.json", plan)
    print(f"run folder: {run_dir}  (model {config.model}, backend {backend}, "
          f"{len(splits['train'][0])} train / {len(splits['validation'][0])} validation images)")
    if note := distribution.evaluation_note(splits, config.batch_size):
        print(note)
    try:
        return train_and_save(model, config, splits, backend, run_dir, started, resumed_at, plan)
    except KeyboardInterrupt as interrupt:
        cli.fail(PROG, f"interrupted by {cli.interrupt_signal(interrupt)}; "
                       f"{saved_epochs(run_dir, config)}. Resume with: "
                       f"{resume_command(run_dir, backend)}",
                 code=cli.interrupt_exit_code(interrupt))
    except folders.WriteError as error:
        cli.fail(PROG, f"{error}; free some space there (or make it writable), then resume "
                       f"with: {resume_command(run_dir, backend)}")


def plan_for_budget(config, splits, backend):
    """Sets `config.epochs` to what fits in the time budget; returns the plan."""
    from kerasvit import models
    from kerasvit.training import budget

    print(f"time budget {config.time_budget_minutes:g} min: timing a few training steps "
          "to size the schedule")
    measured = budget.measure(
        config, splits, backend, lambda: models.build_model(config.model, **config.model_args))
    plan = budget.plan_epochs(
        budget_minutes=config.time_budget_minutes, elapsed_s=time.time() - PROCESS_START,
        measured=measured, validation_images=len(splits["validation"][0]),
        test_images=len(splits["test"][0]), tta=config.test_time_augmentation)
    config.epochs = plan["epochs"]
    print(budget.describe(plan))
    return plan


def open_run_dir(config, backend, args, distributed, chosen_precision):
    """Returns (run folder, epochs already done or None): a new folder with config.json and
    env.json, or the --resume folder made ready to continue: half-written files removed,
    history cut back to the epochs in the backup."""
    from kerasvit.training import checkpoint

    if not args.resume:
        worker_dir = distribution.default_run_dir(config.model, backend, args.hosts, folders.RUNS_ROOT)
        run_dir = folders.new_run_dir(config.model, backend, args.run_dir or worker_dir)
        folders.write_json(run_dir / "config.json", config.to_dict())
        folders.write_json(run_dir / "env.json", {**environment.collect_env(backend), "distribution": distributed,
                                                  "mixed_precision": chosen_precision})
        return run_dir, None
    run_dir = Path(args.resume)
    folders.remove_partial_files(run_dir)
    done = checkpoint.finished_epochs(run_dir / "backup")
    folders.truncate_history(run_dir / "history.csv", done)
    print(f"resuming {run_dir}: {done} of {config.epochs} epochs done")
    trained_on = (read_json_or_none(run_dir / "env.json") or {}).get("backend")
    if trained_on and trained_on != backend:
        print(f"note: this run was started on {trained_on} and continues on {backend}; "
              "it will not match an unbroken run exactly")
    return run_dir, done


def read_json_or_none(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def train_and_save(model, config, splits, backend, run_dir, started, resumed_at=None, plan=None):
    from kerasvit.training import budget, callbacks, loop

    watch = [budget.BudgetWatch(plan, PROCESS_START, config.epochs)] if plan else []
    history, monitor = loop.fit(model, config, splits, backend, run_dir, extra_callbacks=watch)
    bad_epoch = callbacks.first_nonfinite_epoch(history)
    if bad_epoch is not None:
        raise UserError(nonfinite_message(bad_epoch, run_dir, config))
    test = loop.evaluate_test(model, config, splits)
    measured = monitor.measured_steps()
    metrics = {
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        "test_top5_accuracy": float(test["top5_accuracy"]),
        "test_f1_macro": float(test["f1"]),
        "best_val_accuracy": loop.best_validation_accuracy(run_dir / "history.csv"),
        "epochs": config.epochs,
        "train_images": int(len(splits["train"][0])),
        "test_images": int(len(splits["test"][0])),
        "train_images_per_s": monitor.images_per_second(),
        "train_images_per_s_method": (
            "batch_size / median interval between step ends (batch fetch included, on every "
            "backend); device synced at each step end; "
            f"first {len(monitor.step_times) - len(measured)} steps excluded"),
        "wall_time_s": time.time() - started,
        "backend": backend,
    }
    if config.test_time_augmentation and distribution.spans_processes():
        print("note: test-time augmentation is left out of multi-process runs (their "
              "predictions span processes); run kerasvit.evaluate --tta on the saved model")
    elif config.test_time_augmentation:
        metrics.update(tta_metrics(model, splits["test"], config.batch_size, config.tta_method))
    if config.time_budget_minutes:
        metrics["time_budget_s"] = 60.0 * config.time_budget_minutes
    # Written last, so it covers everything but writing the files.
    metrics["process_wall_time_s"] = time.time() - PROCESS_START
    if resumed_at is not None:
        metrics["resumed_after_epochs"] = resumed_at  # this process trained the rest
    loop.save_outputs(model, run_dir, metrics)
    print_summary(run_dir, metrics)
    return run_dir


def tta_metrics(model, test_split, batch_size, method):
    """Test metrics of softmax averaged over views of each image (evaluate.TTA_METHODS)."""
    from kerasvit.evaluation import tta

    views = tta.tta_evaluation(model, *test_split, batch_size, method=method)
    return {
        "test_accuracy_tta": views["accuracy"],
        "test_top5_accuracy_tta": views["top5_accuracy"],
        "test_f1_macro_tta": views["f1_macro"],
        "tta_views": method,
        "tta_method": views["method"],
    }


def nonfinite_message(bad_epoch, run_dir, config):
    from kerasvit.training import checkpoint

    good = checkpoint.finished_epochs(run_dir / "backup")
    kept = (f"the last good state (after epoch {good}) is kept in {run_dir / 'backup'}"
            if good else "no epoch had finished with a finite loss, so no state was kept")
    return (f"training stopped in epoch {bad_epoch + 1} of {config.epochs}: the loss became "
            f"NaN or infinite; {kept}. Start a new run with a lower --learning-rate "
            f"(it was {config.learning_rate:g})")


def saved_epochs(run_dir, config):
    from kerasvit.training import checkpoint

    done = checkpoint.finished_epochs(run_dir / "backup")
    return f"{done} of {config.epochs} epochs are saved"


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
