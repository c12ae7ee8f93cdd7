"""`--time-budget MINUTES`: size the schedule so that the whole run ends within the budget.

The learning-rate schedule (warmup, then cosine decay to zero) is fixed by the number of
epochs, so that number has to be known before training starts: a run cut off when time is
up would end at a high learning rate. Before training, a throw-away copy of the model
(same architecture, same compiled step) times a few training steps and evaluation batches on
the real data; the epochs that fit in what is left of the budget, after validation, the test
evaluation and a safety margin, become the run's `epochs`. The plan is written to the run
folder as budget.json and the chosen epochs to config.json, so `--resume` and a rerun with
`--epochs N` repeat it exactly. If the machine slows down mid-run, `BudgetWatch` says at the
first epoch whose pace would end the run past its budget; the schedule is kept.

Import only after the backend is fixed (`kerasvit.cli.check_backend`).
"""

import sys
import time

import keras
import numpy as np

from kerasvit import models
from kerasvit.config import ConfigError

# Fraction of the budget the plan may use: timing noise and epoch-to-epoch variation
# (epoch 1 carries the real model's compilation) must not push the run over.
SAFETY_FRACTION = 0.92
# Per epoch outside the steps: backup, history, TensorBoard, confusion image (measured ~1-3 s).
EPOCH_OVERHEAD_S = 4.0
# After training: model.keras, metrics.json, plots.
FINAL_OVERHEAD_S = 15.0
WARMUP_STEPS = 2
TIMED_STEPS = 5
TIMED_EVAL_BATCHES = 3


def seconds(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def measure(config, splits, backend, build_model):
    """Times the compiled training step and evaluation on a fresh copy of the model.

    Returns seconds per training step (median), evaluation images/s, and the one-off cost
    of the first (compiling) step."""
    from kerasvit.data import stream
    from kerasvit.evaluation import timing
    from kerasvit.training import loop, recipe

    model = build_model()
    images, labels = splits["train"]
    steps = loop.count_steps(len(images), config.batch_size, config.steps_per_epoch)
    recipe.compile_model(model, config, steps, backend)
    batches_stream = stream.training_stream(
        images, labels, image_size=models.feed_size(model, images.shape[1:3]),
        batch_size=config.batch_size,
        steps=min(WARMUP_STEPS + TIMED_STEPS, steps), augmentation=config.augmentation,
        seed=config.seed, epochs=1)
    distinct = [(x.numpy(), y.numpy()) for x, y in batches_stream]
    batches = [distinct[i % len(distinct)] for i in range(WARMUP_STEPS + TIMED_STEPS)]

    def train_step(batch):
        logs = model.train_on_batch(*batch, return_dict=True)
        float(logs["loss"])  # Waits for the step: async backends return early.

    first_s = seconds(lambda: train_step(batches[0]))
    for batch in batches[1:WARMUP_STEPS]:
        train_step(batch)
    step_s = float(np.median([seconds(lambda b=batch: train_step(b))
                              for batch in batches[WARMUP_STEPS:]]))
    eval_s, _ = timing.median_call_seconds(model, batches[0][0], TIMED_EVAL_BATCHES)
    return {
        "train_step_s": step_s,
        "eval_images_per_s": config.batch_size / eval_s,
        "compile_s": max(first_s - step_s, 0.0),
        "steps_per_epoch": steps,
    }


def plan_epochs(*, budget_minutes, elapsed_s, measured, validation_images, test_images, tta):
    """Epochs that fit in the budget, and the arithmetic behind them (for budget.json)."""
    eval_rate = measured["eval_images_per_s"]
    epoch_s = (measured["train_step_s"] * measured["steps_per_epoch"]
               + validation_images / eval_rate + EPOCH_OVERHEAD_S)
    # Test evaluation, plus two prediction passes (plain and mirrored) for TTA.
    final_s = test_images / eval_rate * (3 if tta else 1) + FINAL_OVERHEAD_S
    budget_s = 60.0 * budget_minutes
    available_s = SAFETY_FRACTION * budget_s - elapsed_s - measured["compile_s"] - final_s
    epochs = int(available_s // epoch_s)
    plan = {
        "budget_s": budget_s,
        "elapsed_before_training_s": elapsed_s,
        "estimated_epoch_s": epoch_s,
        "estimated_final_s": final_s,
        "safety_fraction": SAFETY_FRACTION,
        "epochs": epochs,
        "estimated_total_s": elapsed_s + measured["compile_s"] + epochs * epoch_s + final_s,
        **measured,
    }
    if epochs < 1:
        needed_minutes = (elapsed_s + measured["compile_s"] + epoch_s + final_s) / SAFETY_FRACTION / 60
        raise ConfigError(
            f"--time-budget {budget_minutes:g} minutes is too short for one epoch of this "
            f"model here (one epoch ~{epoch_s / 60:.1f} min, test evaluation ~{final_s / 60:.1f} "
            f"min); give at least {needed_minutes:.1f} minutes, or use --subset-per-class or "
            "--epochs instead")
    return plan


def describe(plan):
    return (f"time budget {plan['budget_s'] / 60:g} min: {plan['epochs']} epochs "
            f"(~{plan['estimated_epoch_s']:.0f} s each, {plan['train_step_s']:.2f} s per step; "
            f"~{plan['estimated_total_s'] / 60:.1f} min in all, {SAFETY_FRACTION:.0%} of the "
            "budget planned)")


def overrun_warning(plan, *, elapsed_s, epochs_done, epochs, last_epoch_s):
    """One line when, at the last epoch's pace, the run would end past its budget; else None."""
    projected_s = elapsed_s + (epochs - epochs_done) * last_epoch_s + plan["estimated_final_s"]
    if projected_s <= plan["budget_s"]:
        return None
    return (f"warning: time budget: epoch {epochs_done} took {last_epoch_s:.0f} s (planned "
            f"~{plan['estimated_epoch_s']:.0f} s); at this pace the run ends at "
            f"~{projected_s / 60:.1f} min, past its {plan['budget_s'] / 60:g}-minute budget. The "
            "machine is slower than when the plan was timed; the schedule is kept, since "
            "cutting it short would end training at a high learning rate")


class BudgetWatch(keras.callbacks.Callback):
    """Prints `overrun_warning` once, at the first epoch end where it applies, from the second
    epoch on: the first also carries compilation, which the plan counted apart. Needs the
    `epoch_time_s` that `training.TrainingMonitor` adds to the logs before it."""

    def __init__(self, plan, process_start, epochs):
        super().__init__()
        self.plan = plan
        self.process_start = process_start
        self.epochs = epochs
        self.warned = False

    def on_epoch_end(self, epoch, logs=None):
        if self.warned or epoch == 0 or not logs or "epoch_time_s" not in logs:
            return
        warning = overrun_warning(self.plan, elapsed_s=time.time() - self.process_start,
                                  epochs_done=epoch + 1, epochs=self.epochs,
                                  last_epoch_s=logs["epoch_time_s"])
        if warning:
            print(warning, file=sys.stderr, flush=True)
            self.warned = True
