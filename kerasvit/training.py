"""The keras side of training: optimiser and schedule, callbacks, fit and test evaluation.

Import only after the backend is fixed (`kerasvit.cli.check_backend`).
"""

import math
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np

from kerasvit import data, distribution, runs

# Norms, biases and embeddings are not decayed (standard for AdamW on ViTs and CNNs).
NO_DECAY_NAMES = ["bias", "gamma", "beta", "class_token", "positions", "position_embedding",
                  "token_embedding"]


def set_precision(mixed_precision):
    # bf16 rather than fp16: it needs no loss scaling, and CPUs with AMX/AVX-512 BF16 and
    # recent GPUs both run it fast.
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if mixed_precision else "float32")


def resolve_jit_compile(setting, backend):
    """'auto' is XLA on JAX only: JAX needs it, while on this CPU TF's XLA was slower for
    convolutions (141 vs 212 images/s) and torch.compile cost 20-50 s for little gain."""
    if setting == "auto":
        return backend == "jax"
    return setting == "on"


def learning_rate_schedule(config, steps_per_epoch):
    total = max(config.epochs * steps_per_epoch, 1)
    warmup = min(int(config.warmup_epochs * steps_per_epoch), total - 1)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=total)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=total - warmup,
        warmup_target=config.learning_rate,
        warmup_steps=warmup,
    )


def compile_model(model, config, steps_per_epoch, backend):
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate_schedule(config, steps_per_epoch),
        weight_decay=config.weight_decay,
    )
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY_NAMES)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=config.label_smoothing
        ),
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.TopKCategoricalAccuracy(k=5, name="top5_accuracy"),
            keras.metrics.F1Score(average="macro", name="f1"),
        ],
        jit_compile=resolve_jit_compile(config.jit_compile, backend),
    )
    return model


class TrainingMonitor(keras.callbacks.Callback):
    """Adds the learning rate and epoch time to each epoch's logs, and measures steady-state
    training throughput: the median step time, syncing the device at every step end and
    skipping the first `warmup_steps` steps of the run (compilation, caches)."""

    def __init__(self, batch_size, warmup_steps=3):
        super().__init__()
        self.batch_size = batch_size
        self.warmup_steps = warmup_steps
        self.step_times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self.step_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])  # Forces the step to finish: async backends report early.
        self.step_times.append(time.perf_counter() - self.step_start)

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


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """BackupAndRestore with one backup file per finished epoch, written under a temporary
    name and renamed into place. A kill at any moment leaves the previous or the new backup,
    never a torn one; Keras' own version writes weights, then the epoch number, in place, so a
    kill in between loses the run or pairs new weights with an old epoch."""

    def backups(self):
        return sorted(Path(self.backup_dir).glob("epoch-*.weights.h5"))

    def on_train_begin(self, logs=None):
        self._load_model()

    def _load_model(self):
        backups = self.backups()
        if not backups:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)  # before loading its state
        self.model.load_weights(backups[-1])
        self.model._initial_epoch = int(backups[-1].name.split("-")[1].split(".")[0])

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        final = Path(self.backup_dir) / f"epoch-{self._current_epoch:05d}.weights.h5"
        partial = final.with_name(f"partial-{self._current_epoch:05d}.weights.h5")
        self.model.save_weights(partial, overwrite=True)
        os.replace(partial, final)
        for older in self.backups():
            if older != final:
                older.unlink()


def make_callbacks(run_dir, confusion_images):
    """The run folder's callbacks; `confusion_images` = (images, labels, split name) for the
    confusion-matrix image written to TensorBoard at the end of training."""
    from kerasvit.tensorboard_images import ConfusionMatrixImage

    # Order matters: they run after TrainingMonitor has filled the logs, and the backup is
    # written last, so a crash between the CSV row and the backup repeats an epoch in
    # history.csv (removed by runs.deduplicate_history) rather than losing one.
    return [
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"), write_graph=False),
        ConfusionMatrixImage(run_dir / "tensorboard" / "validation", *confusion_images),
        AtomicBackupAndRestore(backup_dir=str(run_dir / "backup")),
    ]


def count_steps(num_images, batch_size, cap):
    steps = num_images // batch_size
    return min(steps, cap) if cap else steps


def fit(model, config, splits, backend, run_dir=None, extra_callbacks=()):
    """Trains `model` per `config`; returns (history, monitor). With `run_dir`, logs into the
    run folder (history.csv, TensorBoard, per-epoch backups for --resume)."""
    image_size = model.input_shape[1:3]
    train_images, train_labels = splits["train"]
    train_ds = data.make_dataset(
        train_images, train_labels, image_size=image_size, batch_size=config.batch_size,
        training=True, augmentation=config.augmentation, seed=config.seed,
    )
    val_ds = None
    if len(splits["validation"][0]):
        val_ds = data.make_dataset(
            *splits["validation"], image_size=image_size, batch_size=config.batch_size,
            training=False,
            batch_multiple=distribution.evaluation_batch_multiple(config.batch_size))
    steps = count_steps(len(train_images), config.batch_size, config.steps_per_epoch)
    compile_model(model, config, steps, backend)
    monitor = TrainingMonitor(config.batch_size)
    callbacks = [monitor, keras.callbacks.TerminateOnNaN()]
    if run_dir is not None:
        callbacks += make_callbacks(run_dir, confusion_images(splits))
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        steps_per_epoch=steps if config.steps_per_epoch else None,
        callbacks=[*callbacks, *extra_callbacks],
        shuffle=False,  # The tf.data pipeline shuffles, seeded.
        verbose=1 if sys.stdout.isatty() else 2,
    )
    return history, monitor


def confusion_images(splits):
    split = "validation" if len(splits["validation"][0]) else "test"
    return (*splits[split], split)


def evaluate_test(model, config, splits, callbacks=()):
    image_size = model.input_shape[1:3]
    test_ds = data.make_dataset(
        *splits["test"], image_size=image_size, batch_size=config.batch_size, training=False,
        batch_multiple=distribution.evaluation_batch_multiple(config.batch_size))
    verbose = 1 if sys.stdout.isatty() else 0
    return model.evaluate(test_ds, return_dict=True, verbose=verbose, callbacks=list(callbacks))


def best_validation_accuracy(history_path):
    import csv

    with open(history_path) as f:
        values = [float(row["val_accuracy"]) for row in csv.DictReader(f)
                  if row.get("val_accuracy") not in (None, "")]
    return max(values) if values else None


def loss_is_finite(history):
    losses = history.history.get("loss", [])
    return all(math.isfinite(v) for v in losses)


def save_outputs(model, run_dir, metrics):
    runs.save_model(model, run_dir / "model.keras")
    runs.write_json(run_dir / "metrics.json", metrics)
