"""Backups for --resume: weights, optimizer state and random-generator states in one
file per epoch, written atomically, so a kill at any moment leaves a usable backup."""

import json
import math
import shutil
import warnings
from pathlib import Path

import keras
import numpy as np

from kerasvit.runs import folders
from kerasvit.training import callbacks

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
        raise folders.write_error(backup_dir, error) if folders.is_write_error(error) else error
    final = backup_dir / f"epoch-{epochs_done:05d}.weights.h5"
    previous = backup_files(backup_dir)
    folders.check_room(final, previous[-1].stat().st_size if previous else backup_size(model))

    def write(temporary):
        model.save_weights(temporary)
        store_random_state(temporary, model)

    # The temporary name must end in .weights.h5 too (Keras checks) but not match
    # BACKUP_PATTERN.
    folders.write_atomically(final, write, name=f"backup-{epochs_done}-partial",
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
        if callbacks.logs_are_finite(logs):
            save_backup(self.model, self.backup_dir, epoch + 1)
