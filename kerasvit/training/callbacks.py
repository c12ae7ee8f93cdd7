"""The run's callbacks: step timing, stopping at a non-finite loss, the run folder's logs
(history.csv, TensorBoard, backups) and the test hook that pauses a run."""

import math
import os
import time

import keras
import numpy as np

from kerasvit.runs import folders
from kerasvit.training import checkpoint


class TrainingMonitor(keras.callbacks.Callback):
    """Adds the learning rate and epoch time to each epoch's logs, and measures steady-state
    training throughput: the median step time, skipping the first `warmup_steps` steps of
    the run (compilation, caches).

    A step's time is the interval from the previous step's end (or the epoch's start) to its
    own end, with the device synced at each end by reading the loss. The same interval on
    every backend: Keras 3.15 fetches the next batch after on_train_batch_begin on
    TensorFlow and JAX but before it on torch, so timing from on_train_batch_begin would
    leave the fetch out on torch only."""

    def __init__(self, batch_size, warmup_steps=3):
        super().__init__()
        self.batch_size = batch_size
        self.warmup_steps = warmup_steps
        self.step_times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = self.last_step_end = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])  # Forces the step to finish: async backends report early.
        now = time.perf_counter()
        self.step_times.append(now - self.last_step_end)
        self.last_step_end = now

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            )
            logs["epoch_time_s"] = time.perf_counter() - self.epoch_start

    @property
    def first_step_s(self):
        """The first (compiling) step of this process."""
        return self.step_times[0] if self.step_times else None

    def measured_steps(self):
        """Step times after warm-up; very short runs keep at least half their steps."""
        skip = min(self.warmup_steps, len(self.step_times) // 2)
        return self.step_times[skip:]

    def images_per_second(self):
        steps = self.measured_steps()
        if not steps:
            return None
        return self.batch_size / float(np.median(steps))


def logs_are_finite(logs):
    """False when an epoch's training or validation loss is NaN or infinite."""
    return all(math.isfinite(float(logs[key])) for key in ("loss", "val_loss")
               if logs and logs.get(key) is not None)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first NaN/inf loss, of a training step or of the validation
    (Keras' TerminateOnNaN sees training steps only: weights can blow up in the last step
    of an epoch and show only in its validation loss)."""

    def on_train_batch_end(self, batch, logs=None):
        if not logs_are_finite({"loss": logs.get("loss")} if logs else None):
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if not logs_are_finite(logs):
            self.model.stop_training = True


def first_nonfinite_epoch(history):
    """The first epoch of `model.fit`'s history with a NaN/inf loss, or None."""
    for index, epoch in enumerate(getattr(history, "epoch", [])):
        logs = {key: values[index] for key, values in history.history.items()
                if key in ("loss", "val_loss") and index < len(values)}
        if not logs_are_finite(logs):
            return epoch
    return None


class PausePoints(keras.callbacks.Callback):
    """Test hook (runs.pause_point): `epoch<E>-batch<B>` pauses after that training step."""

    epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        folders.pause_point(f"epoch{self.epoch}-batch{batch}")


def make_callbacks(run_dir, confusion_images, torch_generator_states=None):
    """The run folder's callbacks; `confusion_images` = (images, labels, split name) for the
    confusion-matrix image written to TensorBoard at the end of training;
    `torch_generator_states` to set at the first step of a resumed run (see EpochBackup)."""
    from kerasvit.training.tensorboard_images import ConfusionMatrixImage

    # Order matters: they run after TrainingMonitor has filled the logs, and the backup is
    # written last, so a kill between the CSV row and the backup repeats that epoch, whose
    # row a resumed run drops (runs.truncate_history) rather than losing one.
    callbacks = [
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"), write_graph=False),
        ConfusionMatrixImage(run_dir / "tensorboard" / "validation", *confusion_images),
        checkpoint.EpochBackup(run_dir / "backup", torch_generator_states),
    ]
    if os.environ.get(folders.PAUSE_VARIABLE):
        callbacks.append(PausePoints())
    return callbacks
