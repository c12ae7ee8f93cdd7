"""Training a model per its config: restore a backup, initialise from data, fit, evaluate
the test split once, save the outputs.

Import only after the backend is fixed (`kerasvit.cli.check_backend`). TensorFlow (the data
pipeline) is imported only by the functions that stream data, so building and compiling a
model needs only keras and its backend (e.g. a GPU machine with torch or JAX alone:
bench/gpu_check.py)."""

import sys

import keras

from kerasvit import distribution, models
from kerasvit.runs import folders
from kerasvit.training import callbacks, checkpoint, recipe


def count_steps(num_images, batch_size, cap):
    steps = num_images // batch_size
    return min(steps, cap) if cap else steps


def fit(model, config, splits, backend, run_dir=None, extra_callbacks=()):
    """Trains `model` per `config`; returns (history, monitor). With `run_dir`, logs into the
    run folder (history.csv, TensorBoard, per-epoch backups) and first restores the newest
    backup there (--resume), training only the epochs after it."""
    from kerasvit.data import stream

    train_images, train_labels = splits["train"]
    image_size = models.feed_size(model, train_images.shape[1:3])
    steps = count_steps(len(train_images), config.batch_size, config.steps_per_epoch)
    recipe.compile_model(model, config, steps, backend)
    monitor = callbacks.TrainingMonitor(config.batch_size)
    fit_callbacks = [monitor, callbacks.StopOnNonFiniteLoss()]
    first_epoch = 0
    if run_dir is not None:
        first_epoch = checkpoint.restore_backup(model, run_dir / "backup")
        generators = (checkpoint.saved_torch_generator_states(checkpoint.backup_files(run_dir / "backup")[-1])
                      if first_epoch else {})
        fit_callbacks += callbacks.make_callbacks(run_dir, confusion_images(splits), generators)
    if first_epoch == 0:  # a resumed run has its data-dependent weights in the backup
        initialize_from_data(model, train_images, config.seed)
    train_ds = stream.training_stream(
        train_images, train_labels, image_size=image_size, batch_size=config.batch_size,
        steps=steps, augmentation=config.augmentation, seed=config.seed,
        epochs=config.epochs, first_epoch=first_epoch)
    if first_epoch >= config.epochs:
        return empty_history(), monitor  # Killed after training, while saving: nothing to redo.
    val_ds = None
    if len(splits["validation"][0]):
        val_ds = stream.evaluation_dataset(
            *splits["validation"], image_size=image_size, batch_size=config.batch_size,
            batch_multiple=distribution.evaluation_batch_multiple(config.batch_size))
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        initial_epoch=first_epoch,
        steps_per_epoch=steps,
        callbacks=[*fit_callbacks, *extra_callbacks],
        shuffle=False,  # The stream is shuffled, seeded per epoch.
        verbose=1 if sys.stdout.isatty() else 2,
    )
    return history, monitor


def initialize_from_data(model, train_images, seed):
    """The data-dependent first step of a run: patch-whitening layers (the cnn) are set
    from training images chosen by `seed`, and saved with the model from then on."""
    from kerasvit.models.cnn_layers import adapt_whitening_layers

    adapted, num_images = adapt_whitening_layers(model, train_images, seed)
    if adapted:
        print(f"whitening layer {', '.join(adapted)} set from the patch covariance of "
              f"{num_images} training images")


def empty_history():
    history = keras.callbacks.History()
    history.epoch = []
    return history


def confusion_images(splits):
    split = "validation" if len(splits["validation"][0]) else "test"
    return (*splits[split], split)


def evaluate_test(model, config, splits, callbacks=()):
    from kerasvit.data import stream

    image_size = models.feed_size(model, splits["test"][0].shape[1:3])
    test_ds = stream.evaluation_dataset(
        *splits["test"], image_size=image_size, batch_size=config.batch_size,
        batch_multiple=distribution.evaluation_batch_multiple(config.batch_size))
    verbose = 1 if sys.stdout.isatty() else 0
    return model.evaluate(test_ds, return_dict=True, verbose=verbose, callbacks=list(callbacks))


def best_validation_accuracy(history_path):
    import csv
    from pathlib import Path

    if not Path(history_path).is_file():  # deleted by hand: the run's metrics still get saved
        return None
    with open(history_path) as f:
        values = [float(row["val_accuracy"]) for row in csv.DictReader(f)
                  if row.get("val_accuracy") not in (None, "")]
    return max(values) if values else None


def save_outputs(model, run_dir, metrics):
    """model.keras, then metrics.json (which marks the run finished), each written
    atomically; then the backup goes. A kill before metrics.json is committed leaves the
    backup, and --resume redoes only the test evaluation and the saving."""
    folders.save_model(model, run_dir / "model.keras", name="model-partial")
    folders.write_json(run_dir / "metrics.json", metrics, name="metrics-partial")
    checkpoint.remove_backup(run_dir)
