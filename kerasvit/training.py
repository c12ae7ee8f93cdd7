"""The keras side of training: optimiser and schedule, callbacks, fit and test evaluation.

Import only after the backend is fixed (`kerasvit.cli.check_backend`). TensorFlow (the data
pipeline, `kerasvit.data`) is imported only by the functions that stream data, so building
and compiling a model needs only keras and its backend (e.g. a GPU machine with torch or JAX
alone: bench/gpu_check.py).
"""

import json
import math
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import keras
import numpy as np

from kerasvit import distribution, optimizers, runs

# Norms, biases and embeddings are not decayed (standard for AdamW on ViTs and CNNs).
NO_DECAY_NAMES = ["bias", "gamma", "beta", "class_token", "positions", "position_embedding",
                  "token_embedding"]


def set_precision(setting, backend=None):
    """Sets the global dtype policy for `setting` ("auto", "on", "off"); returns
    {"setting", "enabled", "reason"} for the run folder."""
    # bf16 rather than fp16: it needs no loss scaling, and CPUs with AMX/AVX-512 BF16 and
    # recent GPUs both run it fast.
    enabled, reason = resolve_precision(setting, backend or keras.backend.backend())
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if enabled else "float32")
    if setting == "on" and bf16_is_emulated():
        print("warning: --mixed-precision on a CPU without bf16 instructions (no AVX-512 BF16 "
              "or AMX): bf16 is emulated here, about 10x slower than float32 on the cnn in "
              "bench/; leave --mixed-precision off on this machine", file=sys.stderr)
    return {"setting": setting, "enabled": enabled, "reason": reason}


# Where bench/throughput.py measured bf16 faster than float32 on a CPU with bf16
# instructions (2026-12-01, AMD EPYC with AVX-512 BF16, cnn): TensorFlow and torch. XLA on
# the CPU (JAX) gained nothing.
BF16_FASTER_ON_CPU = ("tensorflow", "torch")


def resolve_precision(setting, backend):
    """(bf16 on?, why) for a precision setting on this machine."""
    if setting in ("on", "off"):
        return setting == "on", f"--mixed-precision {setting}"
    if on_accelerator():
        return True, "auto: an accelerator runs bf16 natively"
    if runs.cpu_has_bf16_instructions() is not True:
        return False, "auto: this CPU has no bf16 instructions (bf16 would be emulated, ~10x slower)"
    if backend not in BF16_FASTER_ON_CPU:
        return False, f"auto: the CPU has bf16 instructions, but on {backend} the bench measured no gain"
    return True, f"auto: the CPU has bf16 instructions and the bench measured bf16 faster on {backend}"


def on_accelerator():
    """True when this backend sees a GPU or TPU."""
    devices = [d.lower() for d in runs.list_devices()]
    return any("gpu" in d or "cuda" in d or "tpu" in d for d in devices)


def bf16_is_emulated():
    """True when training runs on a CPU that lacks bf16 instructions."""
    return not on_accelerator() and runs.cpu_has_bf16_instructions() is False


def resolve_jit_compile(setting, backend):
    """'auto' is XLA on JAX only: JAX needs it, while on this CPU TF's XLA was slower for
    convolutions (141 vs 212 images/s) and torch.compile cost 20-50 s for little gain."""
    if setting == "auto":
        return backend == "jax"
    return setting == "on"


def learning_rate_schedule(config, steps_per_epoch, peak=None):
    peak = config.learning_rate if peak is None else peak
    total = max(config.epochs * steps_per_epoch, 1)
    warmup = min(int(config.warmup_epochs * steps_per_epoch), total - 1)
    if config.schedule == "triangular":
        return optimizers.TriangularSchedule(peak, total_steps=total, warmup_steps=warmup)
    if config.schedule == "linear_decay":
        return optimizers.TriangularSchedule(peak, total_steps=total, warmup_steps=0,
                                             start_factor=1.0, end_factor=0.0)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(peak, decay_steps=total)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=total - warmup,
        warmup_target=peak,
        warmup_steps=warmup,
    )


def make_optimizer(model, config, steps_per_epoch):
    if config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(
            learning_rate=learning_rate_schedule(config, steps_per_epoch),
            weight_decay=config.weight_decay,
        )
        optimizer.exclude_from_weight_decay(var_names=NO_DECAY_NAMES)
        return optimizer
    from kerasvit.models.cnn_layers import PatchWhitening

    step_size, decay = optimizers.airbench_hyperparameters(
        config.learning_rate, config.weight_decay, config.momentum, config.batch_size)
    frozen = {}
    if config.whitening_bias_epochs:
        bias_steps = math.ceil(config.whitening_bias_epochs * steps_per_epoch)
        frozen = {layer.bias.path: bias_steps for layer in model.layers
                  if isinstance(layer, PatchWhitening)}
    return optimizers.LookaheadNesterovSGD(
        learning_rate=learning_rate_schedule(config, steps_per_epoch, peak=step_size),
        momentum=config.momentum,
        weight_decay=decay,
        scaled_variable_names=["beta"],  # BatchNorm offsets
        scaled_learning_rate=config.bias_lr_scale,
        frozen_after_steps=frozen,
        lookahead_every=config.lookahead_every,
        total_steps=max(config.epochs * steps_per_epoch, 1),
        muon_variable_paths=[v.path for v in model.trainable_variables
                             if config.muon_learning_rate and len(v.shape) == 4],
        muon_learning_rate_scale=config.muon_learning_rate / step_size,
        muon_momentum=config.muon_momentum,
    )


def compile_model(model, config, steps_per_epoch, backend):
    optimizer = make_optimizer(model, config, steps_per_epoch)
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


# ---------------------------------------------------------------- backups for --resume

BACKUP_PATTERN = "epoch-*.weights.h5"
# Keras' save_weights leaves out the state of the random generators (dropout, stochastic
# depth): Keras' seed generators, and on torch also torch's own global generators. It goes
# into the same file, so that one rename commits all of it.
RANDOM_STATE_ATTRIBUTE = "kerasvit_seed_generator_states"
TORCH_RANDOM_STATE_PREFIX = "kerasvit_torch_generator_"


def backup_files(backup_dir):
    return sorted(Path(backup_dir).glob(BACKUP_PATTERN))


def epochs_in(backup_file):
    """epoch-00003.weights.h5 -> 3 finished epochs."""
    return int(Path(backup_file).name.split("-")[1].split(".")[0])


def finished_epochs(backup_dir):
    """How many epochs the newest backup holds (0 without one)."""
    files = backup_files(backup_dir)
    return epochs_in(files[-1]) if files else 0


def seed_generator_states(model):
    return [v for v in model.variables if v.name == "seed_generator_state"]


def torch_generator_states():
    """torch's global random generators (name -> uint8 state). Keras' Dropout draws from
    them on torch when it was given no seed (its "fast path"), not from a seed generator."""
    if keras.backend.backend() != "torch":
        return {}
    import torch

    states = {"cpu": torch.get_rng_state().numpy()}
    if torch.cuda.is_available():
        states.update({f"cuda{index}": state.numpy()
                       for index, state in enumerate(torch.cuda.get_rng_state_all())})
    return states


def set_torch_generator_state(name, state):
    import torch

    state = torch.from_numpy(np.asarray(state, dtype=np.uint8))
    if name == "cpu":
        torch.set_rng_state(state)
    elif torch.cuda.is_available() and int(name[4:]) < torch.cuda.device_count():
        torch.cuda.set_rng_state(state, device=int(name[4:]))


def store_random_state(path, model):
    import h5py

    states = [keras.ops.convert_to_numpy(v).tolist() for v in seed_generator_states(model)]
    with h5py.File(path, "a") as f:
        f.attrs[RANDOM_STATE_ATTRIBUTE] = json.dumps(states)
        for name, state in torch_generator_states().items():
            f.attrs[TORCH_RANDOM_STATE_PREFIX + name] = state


def restore_random_state(path, model):
    """Sets the seed generators from the backup, in model order (the same architecture as
    the weights that were just loaded; names may differ between processes)."""
    import h5py

    with h5py.File(path, "r") as f:
        text = f.attrs.get(RANDOM_STATE_ATTRIBUTE)
    variables = seed_generator_states(model)
    saved = json.loads(text) if text is not None else []
    if len(saved) != len(variables):
        warnings.warn(f"{path} holds {len(saved)} random-generator states, the model has "
                      f"{len(variables)}; dropout masks will differ from the unbroken run",
                      stacklevel=2)
        return
    for variable, state in zip(variables, saved):
        variable.assign(np.asarray(state, dtype=variable.dtype))


def saved_torch_generator_states(path):
    """The torch generator states in a backup ({} when not saved under torch)."""
    import h5py

    if keras.backend.backend() != "torch":
        return {}
    with h5py.File(path, "r") as f:
        return {name[len(TORCH_RANDOM_STATE_PREFIX):]: np.asarray(f.attrs[name])
                for name in f.attrs if name.startswith(TORCH_RANDOM_STATE_PREFIX)}


def save_backup(model, backup_dir, epochs_done):
    """Writes backup/epoch-NNNNN.weights.h5 (weights, optimizer state with its step count,
    random-generator states) under a temporary name, renames it into place, then deletes
    the older backups: a kill at any moment leaves the previous backup or the new one."""
    backup_dir = Path(backup_dir)
    try:
        backup_dir.mkdir(exist_ok=True)
    except OSError as error:
        raise runs.write_error(backup_dir, error) if runs.is_write_error(error) else error
    final = backup_dir / f"epoch-{epochs_done:05d}.weights.h5"
    previous = backup_files(backup_dir)
    runs.check_room(final, previous[-1].stat().st_size if previous else backup_size(model))

    def write(temporary):
        model.save_weights(temporary)
        store_random_state(temporary, model)

    # The temporary name must end in .weights.h5 too (Keras checks) but not match
    # BACKUP_PATTERN.
    runs.write_atomically(final, write, name=f"backup-{epochs_done}-partial",
                          temporary=backup_dir / f".partial-{epochs_done:05d}.weights.h5")
    for older in backup_files(backup_dir):
        if older != final:
            older.unlink()


def backup_size(model):
    """About what save_weights writes: every variable of the model and the optimizer,
    plus room for the HDF5 structure."""
    variables = list(model.variables)
    if model.optimizer is not None:
        variables += list(model.optimizer.variables)
    data = sum(math.prod(v.shape) * dtype_size(v.dtype) for v in variables)
    return int(data * 1.05) + 64 * 1024


def dtype_size(dtype):
    try:
        return np.dtype(dtype).itemsize
    except TypeError:  # e.g. bfloat16, unknown to numpy
        return 4


def restore_backup(model, backup_dir):
    """Loads the newest backup into the compiled `model`; returns its number of finished
    epochs (0 when there is none, leaving the model as it is)."""
    backup_dir = Path(backup_dir)
    for leftover in backup_dir.glob(".partial-*"):
        leftover.unlink()  # half-written by a killed process
    files = backup_files(backup_dir)
    if not files:
        return 0
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # before loading its state
    model.load_weights(files[-1])
    restore_random_state(files[-1], model)
    return epochs_in(files[-1])


def remove_backup(run_dir):
    """A finished run (metrics.json written) needs no backup."""
    shutil.rmtree(Path(run_dir) / "backup", ignore_errors=True)


class EpochBackup(keras.callbacks.Callback):
    """Backs up the training state after every epoch that ended with a finite loss (a NaN
    epoch must not replace the last good state). Replaces keras.callbacks.BackupAndRestore,
    which writes weights, then the epoch number, in place (a kill in between loses the run
    or pairs new weights with an old epoch), omits the random-generator states, and deletes
    its backup when fit returns, before the model and metrics are saved.

    `torch_generator_states` (from the backup a run resumes from) are set at the first
    training step, not when the backup is loaded: on torch, Keras feeds tf.data through a
    torch DataLoader, whose iterators draw from the global generator when fit creates them,
    which the unbroken run did before its backup was written."""

    def __init__(self, backup_dir, torch_generator_states=None):
        super().__init__()
        self.backup_dir = Path(backup_dir)
        self.pending_generator_states = torch_generator_states or {}

    def on_train_batch_begin(self, batch, logs=None):
        for name, state in self.pending_generator_states.items():
            set_torch_generator_state(name, state)
        self.pending_generator_states = {}

    def on_epoch_end(self, epoch, logs=None):
        if logs_are_finite(logs):
            save_backup(self.model, self.backup_dir, epoch + 1)


class PausePoints(keras.callbacks.Callback):
    """Test hook (runs.pause_point): `epoch<E>-batch<B>` pauses after that training step."""

    epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        runs.pause_point(f"epoch{self.epoch}-batch{batch}")


def make_callbacks(run_dir, confusion_images, torch_generator_states=None):
    """The run folder's callbacks; `confusion_images` = (images, labels, split name) for the
    confusion-matrix image written to TensorBoard at the end of training;
    `torch_generator_states` to set at the first step of a resumed run (see EpochBackup)."""
    from kerasvit.tensorboard_images import ConfusionMatrixImage

    # Order matters: they run after TrainingMonitor has filled the logs, and the backup is
    # written last, so a kill between the CSV row and the backup repeats that epoch, whose
    # row a resumed run drops (runs.truncate_history) rather than losing one.
    callbacks = [
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"), write_graph=False),
        ConfusionMatrixImage(run_dir / "tensorboard" / "validation", *confusion_images),
        EpochBackup(run_dir / "backup", torch_generator_states),
    ]
    if os.environ.get(runs.PAUSE_VARIABLE):
        callbacks.append(PausePoints())
    return callbacks


def count_steps(num_images, batch_size, cap):
    steps = num_images // batch_size
    return min(steps, cap) if cap else steps


def training_stream(images, labels, *, image_size, batch_size, steps, augmentation, seed,
                    epochs, first_epoch=0):
    """The training batches of epochs first_epoch .. epochs-1, `steps` batches each.

    Each epoch's order (a full shuffle, then its first steps * batch_size images) and its
    augmentation depend only on (seed, epoch). A resumed run therefore sees exactly the
    batches of the unbroken run: tf.data's reshuffle_each_iteration counts the iterations
    of the process, so a fresh process would start again at the first epoch's order."""
    import tensorflow as tf

    from kerasvit import data

    if len(images) < batch_size:
        raise data.DataError(
            f"batch_size {batch_size} is larger than the {len(images)} training images; "
            "lower --batch-size or use more data")
    per_epoch = steps * batch_size
    transform = {**data.AUGMENT_FUNCTIONS, **data.EPOCH_AUGMENT_FUNCTIONS}[augmentation]
    image_size = tuple(int(s) for s in image_size)
    images, labels = tf.constant(images), tf.constant(labels)

    def mirror(index, epoch):
        # airbench's alternating flip: each image has a fixed random parity and is mirrored
        # in every other epoch, so that it is seen both ways in any two epochs.
        parity = tf.random.stateless_uniform([], seed=tf.stack([tf.constant(seed, tf.int64), index]),
                                             alg="philox") < 0.5
        return tf.not_equal(parity, tf.equal(epoch % 2, 1))

    def epoch_elements(epoch):
        epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
        order_seed, augment_seed = tf.unstack(
            tf.random.experimental.stateless_split(epoch_seed, 2, alg="philox"))
        order = tf.random.experimental.stateless_shuffle(
            tf.range(tf.shape(images, out_type=tf.int64)[0]), seed=order_seed, alg="philox")
        image_seeds = tf.random.stateless_uniform(
            [per_epoch, 2], seed=augment_seed, minval=None, maxval=None, dtype=tf.int64,
            alg="philox")
        epochs_column = tf.fill([per_epoch], epoch)
        return tf.data.Dataset.from_tensor_slices((order[:per_epoch], image_seeds, epochs_column))

    def prepare(index, image_seed, epoch):
        image = tf.cast(tf.gather(images, index), tf.float32)
        if augmentation in data.EPOCH_AUGMENT_FUNCTIONS:
            image = transform(image, image_size, image_seed, mirror(index, epoch))
        else:
            image = transform(image, image_size, image_seed)
        return image, tf.one_hot(tf.gather(labels, index), data.NUM_CLASSES)

    dataset = tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch_elements)
    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def fit(model, config, splits, backend, run_dir=None, extra_callbacks=()):
    """Trains `model` per `config`; returns (history, monitor). With `run_dir`, logs into the
    run folder (history.csv, TensorBoard, per-epoch backups) and first restores the newest
    backup there (--resume), training only the epochs after it."""
    from kerasvit import data

    image_size = model.input_shape[1:3]
    train_images, train_labels = splits["train"]
    steps = count_steps(len(train_images), config.batch_size, config.steps_per_epoch)
    compile_model(model, config, steps, backend)
    monitor = TrainingMonitor(config.batch_size)
    callbacks = [monitor, StopOnNonFiniteLoss()]
    first_epoch = 0
    if run_dir is not None:
        first_epoch = restore_backup(model, run_dir / "backup")
        generators = (saved_torch_generator_states(backup_files(run_dir / "backup")[-1])
                      if first_epoch else {})
        callbacks += make_callbacks(run_dir, confusion_images(splits), generators)
    if first_epoch == 0:  # a resumed run has its data-dependent weights in the backup
        initialize_from_data(model, train_images, config.seed)
    train_ds = training_stream(
        train_images, train_labels, image_size=image_size, batch_size=config.batch_size,
        steps=steps, augmentation=config.augmentation, seed=config.seed,
        epochs=config.epochs, first_epoch=first_epoch)
    if first_epoch >= config.epochs:
        return empty_history(), monitor  # Killed after training, while saving: nothing to redo.
    val_ds = None
    if len(splits["validation"][0]):
        val_ds = data.make_dataset(
            *splits["validation"], image_size=image_size, batch_size=config.batch_size,
            training=False,
            batch_multiple=distribution.evaluation_batch_multiple(config.batch_size))
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        initial_epoch=first_epoch,
        steps_per_epoch=steps,
        callbacks=[*callbacks, *extra_callbacks],
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
    from kerasvit import data

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


def save_outputs(model, run_dir, metrics):
    """model.keras, then metrics.json (which marks the run finished), each written
    atomically; then the backup goes. A kill before metrics.json is committed leaves the
    backup, and --resume redoes only the test evaluation and the saving."""
    runs.save_model(model, run_dir / "model.keras", name="model-partial")
    runs.write_json(run_dir / "metrics.json", metrics, name="metrics-partial")
    remove_backup(run_dir)
