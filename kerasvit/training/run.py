"""One training run from its resolved config: the run folder (a new one, or an interrupted
one made ready to continue), the time-budget plan, fit, the test evaluation, metrics.json
and model.keras. kerasvit.cli.train parses, checks and reports; this does the work.

Import only after the backend is fixed (`kerasvit.cli.check_backend`).
"""

import json
import time
from pathlib import Path

from kerasvit import distribution, models
from kerasvit.errors import UserError
from kerasvit.evaluation import tta
from kerasvit.runs import environment, folders
from kerasvit.training import budget, callbacks, checkpoint, loop


def plan_for_budget(config, splits, backend, process_start):
    """Sets `config.epochs` to what fits in the time budget, counted from `process_start`;
    returns the plan."""
    print(f"time budget {config.time_budget_minutes:g} min: timing a few training steps "
          "to size the schedule")
    measured = budget.measure(
        config, splits, backend, lambda: models.build_model(config.model, **config.model_args))
    plan = budget.plan_epochs(
        budget_minutes=config.time_budget_minutes, elapsed_s=time.time() - process_start,
        measured=measured, validation_images=len(splits["validation"][0]),
        test_images=len(splits["test"][0]), tta=config.test_time_augmentation)
    config.epochs = plan["epochs"]
    print(budget.describe(plan))
    return plan


def create_run_dir(config, backend, run_dir, hosts, distributed, chosen_precision,
                   chosen_jit, chosen_layout=None):
    """A new run folder (`run_dir`, or runs/<model>-<backend>-<time>) with config.json and
    env.json (with the --mixed-precision, --jit-compile and image-layout picks and why)."""
    default = distribution.default_run_dir(config.model, backend, hosts, folders.RUNS_ROOT)
    run_dir = folders.new_run_dir(config.model, backend, run_dir or default)
    folders.write_json(run_dir / "config.json", config.to_dict())
    folders.write_json(run_dir / "env.json", {**environment.collect_env(backend),
                                              "distribution": distributed,
                                              "mixed_precision": chosen_precision,
                                              "jit_compile": chosen_jit,
                                              **({"data_format": chosen_layout}
                                                 if chosen_layout else {})})
    return run_dir


def reopen_run_dir(run_dir, config, backend):
    """Makes an interrupted run's folder ready to continue: half-written files removed,
    history cut back to the epochs in the backup. Returns the epochs already done."""
    run_dir = Path(run_dir)
    folders.remove_partial_files(run_dir)
    done = checkpoint.finished_epochs(run_dir / "backup")
    folders.truncate_history(run_dir / "history.csv", done)
    print(f"resuming {run_dir}: {done} of {config.epochs} epochs done")
    trained_on = (read_json_or_none(run_dir / "env.json") or {}).get("backend")
    if trained_on and trained_on != backend:
        print(f"note: this run was started on {trained_on} and continues on {backend}; "
              "it will not match an unbroken run exactly")
    return done


def read_json_or_none(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def train_and_save(model, config, splits, backend, run_dir, started, process_start,
                   resumed_at=None, plan=None, tracker=None):
    """Fits, evaluates the test split once, writes model.keras and metrics.json; returns
    the metrics. `tracker` (kerasvit.training.tracking) logs the epochs and the results."""
    watch = [budget.BudgetWatch(plan, process_start, config.epochs)] if plan else []
    if tracker:
        watch += tracker.callbacks()
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
    metrics["process_wall_time_s"] = time.time() - process_start
    if resumed_at is not None:
        metrics["resumed_after_epochs"] = resumed_at  # this process trained the rest
    loop.save_outputs(model, run_dir, metrics)
    if tracker:
        tracker.finish(model, config, splits, metrics, run_dir)
    return metrics


def tta_metrics(model, test_split, batch_size, method):
    """Test metrics of softmax averaged over views of each image (config.TTA_METHODS)."""
    views = tta.tta_evaluation(model, *test_split, batch_size, method=method)
    return {
        "test_accuracy_tta": views["accuracy"],
        "test_top5_accuracy_tta": views["top5_accuracy"],
        "test_f1_macro_tta": views["f1_macro"],
        "tta_views": method,
        "tta_method": views["method"],
    }


def nonfinite_message(bad_epoch, run_dir, config):
    good = checkpoint.finished_epochs(run_dir / "backup")
    kept = (f"the last good state (after epoch {good}) is kept in {run_dir / 'backup'}"
            if good else "no epoch had finished with a finite loss, so no state was kept")
    return (f"training stopped in epoch {bad_epoch + 1} of {config.epochs}: the loss became "
            f"NaN or infinite; {kept}. Start a new run with a lower --learning-rate "
            f"(it was {config.learning_rate:g})")


def saved_epochs(run_dir, config):
    done = checkpoint.finished_epochs(run_dir / "backup")
    return f"{done} of {config.epochs} epochs are saved"
