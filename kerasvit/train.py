"""Train a model on CIFAR-10 on whichever backend KERAS_BACKEND names.

    KERAS_BACKEND=torch python -m kerasvit.train --model cnn --epochs 5
    KERAS_BACKEND=jax python -m kerasvit.train --model vit_b16 --preset path/to/preset
    python -m kerasvit.train --resume runs/cnn-torch-20261122-101500

Flow: flags -> config (checked, no keras yet) -> data -> model -> run folder -> fit ->
test evaluation -> model.keras + metrics.json.
"""

import time
from pathlib import Path

from kerasvit import cli, distribution
from kerasvit.errors import UserError
from kerasvit.config import ConfigError, check_model_args, config_from_dict, resolve

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
    parser.add_argument("--mixed-precision", action="store_true", default=None, help="bfloat16 compute")
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
    return config


def refuse_existing_run_dir(run_dir):
    if run_dir and Path(run_dir).exists():
        raise UserError(
            f"run folder {run_dir} already exists; choose another --run-dir, or pass "
            f"--resume {run_dir} to continue it"
        )


def load_resume(run_dir):
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"{run_dir} is not a kerasvit run folder (no config.json); "
                          "pass the folder of an interrupted run to --resume")
    if (run_dir / "metrics.json").is_file():
        raise ConfigError(f"run {run_dir} already finished (metrics.json exists); "
                          "start a new run instead of --resume")
    from kerasvit import runs

    return config_from_dict(runs.read_json(run_dir / "config.json"))


def main(argv=None):
    args = parse_args(argv)
    backend = cli.check_backend(PROG)
    try:
        args.hosts = distribution.hosts_from(args)
        if args.resume:
            args.resume = distribution.path_for_process(args.resume, args.hosts)
            config = load_resume(args.resume)
        else:
            config = resolve_config(args)
            args.run_dir = distribution.path_for_process(args.run_dir, args.hosts)
            refuse_existing_run_dir(args.run_dir)
        distribution.check_request(config.distribute, backend, args.hosts)
        cli.import_tensorflow_quietly()
        return run(config, backend, args)
    except UserError as error:
        cli.fail(PROG, str(error))


def run(config, backend, args):
    started = time.time()
    from kerasvit import data, models, runs, training

    spec = models.get_spec(config.model)
    check_model_args(config, spec.builder)
    training.set_precision(config.mixed_precision)
    import keras

    keras.utils.set_random_seed(config.seed)
    distributed = distribution.setup(config.distribute, config.batch_size, args.hosts)
    splits = data.load_splits(config.data_dir, config.validation_size, config.subset_per_class)
    if config.test_images:
        splits["test"] = tuple(array[:config.test_images] for array in splits["test"])
    model = models.build_model(config.model, **config.model_args)

    if args.resume:
        run_dir = Path(args.resume)
    else:
        worker_dir = distribution.default_run_dir(config.model, backend, args.hosts, runs.RUNS_ROOT)
        run_dir = runs.new_run_dir(config.model, backend, args.run_dir or worker_dir)
        runs.write_json(run_dir / "config.json", config.to_dict())
        runs.write_json(run_dir / "env.json", {**runs.collect_env(backend), "distribution": distributed})
    print(f"run folder: {run_dir}  (model {config.model}, backend {backend}, "
          f"{len(splits['train'][0])} train / {len(splits['validation'][0])} validation images)")
    if note := distribution.evaluation_note(splits, config.batch_size):
        print(note)

    try:
        history, monitor = training.fit(model, config, splits, backend, run_dir)
    except KeyboardInterrupt:
        cli.fail(PROG, f"interrupted; the last finished epoch is saved. Resume with: "
                       f"python -m kerasvit.train --resume {run_dir}", code=130)
    runs.deduplicate_history(run_dir / "history.csv")
    if not training.loss_is_finite(history):
        cli.fail(PROG, f"training stopped: the loss became NaN/inf; lower --learning-rate. "
                       f"The last good epoch is in {run_dir}/backup", code=1)

    test = training.evaluate_test(model, config, splits)
    metrics = {
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        "test_top5_accuracy": float(test["top5_accuracy"]),
        "test_f1_macro": float(test["f1"]),
        "best_val_accuracy": training.best_validation_accuracy(run_dir / "history.csv"),
        "epochs": config.epochs,
        "train_images": int(len(splits["train"][0])),
        "test_images": int(len(splits["test"][0])),
        "train_images_per_s": monitor.images_per_second(),
        "train_images_per_s_method": (
            "batch_size / median step time; device synced at each step end; "
            f"first {len(monitor.step_times) - len(monitor.measured_steps())} steps excluded"),
        "wall_time_s": time.time() - started,
        "backend": backend,
    }
    training.save_outputs(model, run_dir, metrics)
    print_summary(run_dir, metrics)
    return run_dir


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
        f"  train speed       {speed:.0f} images/s" if speed else "  train speed       -",
        f"  wall time         {metrics['wall_time_s']:.0f} s",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
