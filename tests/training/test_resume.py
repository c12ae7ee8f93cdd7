"""Interrupted runs resume exactly (issue 9): the real CLI is stopped at exact points (the
process announces each pause point on stdout and waits; see kerasvit.runs.folders.pause_point),
killed there with SIGKILL, SIGTERM or SIGINT, resumed, and compared with an unbroken run."""

import dataclasses
import json
import os
import signal
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import (
    TINY_EPOCHS,
    TINY_TRAIN_FLAGS,
    cli_env,
    history_rows,
    run_train,
    start_cli,
)

from kerasvit.runs import folders


@dataclasses.dataclass(frozen=True)
class Interruption:
    """Stop the run at pause point `point` with `signal`; afterwards the backup must hold
    `saved` finished epochs (the next --resume continues from there)."""

    point: str
    signal: signal.Signals
    saved: int


# Every way to die, in one run of 3 epochs (2 steps each); each resume continues the same
# run folder. Kills while files are written stop between writing and renaming.
ALL_INTERRUPTIONS = [
    Interruption("epoch1-batch0", signal.SIGKILL, saved=1),    # during an epoch
    Interruption("backup-2-partial", signal.SIGKILL, saved=1),  # while the backup is written
    Interruption("epoch2-batch0", signal.SIGTERM, saved=2),    # a polite kill, mid-epoch
    Interruption("model-partial", signal.SIGKILL, saved=3),     # while model.keras is written
    Interruption("metrics-partial", signal.SIGINT, saved=3),    # Ctrl-C while metrics.json is
]
# The quick version for every test run (each process costs 10-40 s of start-up): SIGKILL
# while the backup of epoch 2 is written (its history row is already there), Ctrl-C while
# model.keras is written (training done, the backup must still be there).
QUICK_INTERRUPTIONS = [
    Interruption("backup-2-partial", signal.SIGKILL, saved=1),
    Interruption("model-partial", signal.SIGINT, saved=3),
]
COMPARED_COLUMNS = ("loss", "accuracy", "top5_accuracy", "f1", "learning_rate", "val_loss",
                    "val_accuracy", "val_top5_accuracy", "val_f1")
COMPARED_METRICS = ("test_accuracy", "test_loss", "test_top5_accuracy", "test_f1_macro",
                    "best_val_accuracy")


def run_until_paused(args, point, cwd):
    """Starts `kerasvit.train ARGS` and returns (process, stdout so far, stderr file) once
    the process says it paused at `point`."""
    stderr_path = cwd / f"stderr-{point}.txt"
    with stderr_path.open("w") as stderr:
        process = start_cli("train", args, cwd, env=cli_env(**{folders.PAUSE_VARIABLE: point}),
                            stdout=subprocess.PIPE, stderr=stderr)
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith(f"kerasvit: paused at {point} "):
            return process, "".join(seen), stderr_path
    process.wait()
    pytest.fail(f"train exited {process.returncode} before pausing at {point}:\n"
                f"{''.join(seen)[-2000:]}\n{stderr_path.read_text()[-3000:]}")


def interrupt(args, interruption, cwd):
    """Runs until the pause point, sends the signal; returns (exit code, stdout, stderr)."""
    process, stdout, stderr_path = run_until_paused(args, interruption.point, cwd)
    try:
        process.send_signal(interruption.signal)
        code = process.wait(timeout=120)
        stdout += process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return code, stdout, stderr_path.read_text()


def check_interrupted(interruption, code, stderr, run_dir, backend):
    """SIGKILL leaves no word; SIGINT/SIGTERM exit 128+signal with one line saying what is
    saved and the exact command that resumes."""
    if interruption.signal == signal.SIGKILL:
        assert code == -signal.SIGKILL
        return
    expected = (f"kerasvit.train: error: interrupted by {interruption.signal.name}; "
                f"{interruption.saved} of {TINY_EPOCHS} epochs are saved. Resume with: "
                f"KERAS_BACKEND={backend} python -m kerasvit.train --resume {run_dir}")
    assert code == 128 + interruption.signal, stderr
    assert [line for line in stderr.splitlines() if line.strip()] == [expected], stderr


def check_nothing_torn(run_dir):
    """Whatever a kill left under the real names is whole."""
    for name in ("config.json", "env.json", "metrics.json"):
        if (run_dir / name).exists():
            json.loads((run_dir / name).read_text())
    if (run_dir / "model.keras").exists():
        with zipfile.ZipFile(run_dir / "model.keras") as archive:
            assert archive.testzip() is None
    backups = sorted((run_dir / "backup").glob("epoch-*.weights.h5"))
    assert len(backups) <= 1


def column(rows, name):
    return np.array([float(row[name]) for row in rows])


@pytest.mark.timeout(900)
@pytest.mark.parametrize("interruptions", [
    pytest.param(QUICK_INTERRUPTIONS, id="quick"),
    pytest.param(ALL_INTERRUPTIONS, id="all", marks=pytest.mark.slow),
])
def test_killed_run_resumes_to_the_same_result(interruptions, reference_run, tmp_path, backend):
    """Interrupted again and again (SIGKILL during an epoch and while each file is written,
    SIGTERM, Ctrl-C), resumed each time: each resume redoes at most one epoch, and the
    final run equals the unbroken reference run."""
    run_dir = tmp_path / "run"
    args, done = [*TINY_TRAIN_FLAGS, "--run-dir", run_dir], None
    for interruption in interruptions:
        code, stdout, stderr = interrupt(args, interruption, tmp_path)
        if done is not None:
            assert f"resuming {run_dir}: {done} of {TINY_EPOCHS} epochs done" in stdout
        check_interrupted(interruption, code, stderr, run_dir, backend)
        check_nothing_torn(run_dir)
        logged = len(history_rows(run_dir))
        assert logged - interruption.saved <= 1, "more than one finished epoch would be redone"
        args, done = ["--resume", run_dir], interruption.saved
    final = run_train(args, tmp_path)
    assert f"resuming {run_dir}: {done} of {TINY_EPOCHS} epochs done" in final.stdout
    assert not (run_dir / "backup").exists() and not list(run_dir.glob(".*partial*"))
    compare_with_reference(run_dir, reference_run, backend)
    again = run_train(["--resume", run_dir], tmp_path, check=False)
    assert again.returncode == 2 and "already finished" in again.stderr


# Backends on which a resumed run equals the unbroken one bit for bit (measured on a 2-core
# CPU; see README "Reliability"). Elsewhere the tolerance is float noise.
EXACT_RESUME = {"tensorflow", "jax", "torch"}


def compare_with_reference(run_dir, reference, backend):
    rows, reference_rows = history_rows(run_dir), history_rows(reference)
    assert [int(row["epoch"]) for row in rows] == list(range(TINY_EPOCHS))
    tolerance = 0.0 if backend in EXACT_RESUME else 1e-5
    for name in COMPARED_COLUMNS:
        np.testing.assert_allclose(column(rows, name), column(reference_rows, name),
                                   rtol=tolerance, atol=tolerance, err_msg=name)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    expected = json.loads((reference / "metrics.json").read_text())
    for name in COMPARED_METRICS:
        assert metrics[name] == pytest.approx(expected[name], rel=tolerance, abs=tolerance), name
    assert metrics["resumed_after_epochs"] == TINY_EPOCHS
    compare_predictions(run_dir / "model.keras", reference / "model.keras", tolerance)


def compare_predictions(model_path, reference_path, tolerance):
    from kerasvit.data import cifar
    from kerasvit.runs import loading

    images = cifar.load_cifar10(cifar.resolve_data_dir())["test"][0][:16].astype("float32")
    resumed = loading.load_model(model_path).predict(images, verbose=0)
    unbroken = loading.load_model(reference_path).predict(images, verbose=0)
    np.testing.assert_allclose(resumed, unbroken, rtol=tolerance, atol=tolerance)


TINY_VIT_FLAGS = [
    "--model", "vit", "--subset-per-class", "5", "--epochs", "2", "--batch-size", "25",
    "--set", "validation_size=50", "--set", "test_images=100",
    "--set", "model_args.num_layers=2", "--set", "model_args.hidden_dim=16",
    "--set", "model_args.mlp_dim=32", "--set", "model_args.num_heads=2",
    "--set", "model_args.drop_path_rate=0.5", "--set", "model_args.dropout_rate=0.3",
]


@pytest.mark.slow
def test_killed_run_with_dropout_resumes_exactly(tmp_path, backend):
    """Dropout and stochastic depth draw from Keras seed generators, whose state
    save_weights omits: the backup carries it, so the resumed run draws the same masks."""
    unbroken = tmp_path / "unbroken"
    run_train([*TINY_VIT_FLAGS, "--run-dir", unbroken], tmp_path)
    run_dir = tmp_path / "run"
    code, _, _ = interrupt([*TINY_VIT_FLAGS, "--run-dir", run_dir],
                           Interruption("epoch1-batch1", signal.SIGKILL, saved=1), tmp_path)
    assert code == -signal.SIGKILL
    run_train(["--resume", run_dir], tmp_path)
    rows, reference_rows = history_rows(run_dir), history_rows(unbroken)
    tolerance = 0.0 if backend in EXACT_RESUME else 1e-5
    for name in COMPARED_COLUMNS:
        np.testing.assert_allclose(column(rows, name), column(reference_rows, name),
                                   rtol=tolerance, atol=tolerance, err_msg=name)


def test_sigterm_becomes_an_interrupt_with_exit_code_143():
    """The handler behind the SIGTERM message (end to end in the slow kill chain)."""
    import time

    from kerasvit import cli

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt) as caught:
        with cli.sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises as soon as the signal arrives
    assert cli.interrupt_signal(caught.value) == "SIGTERM"
    assert cli.interrupt_exit_code(caught.value) == 143
    assert signal.getsignal(signal.SIGTERM) is before  # restored
    assert cli.interrupt_exit_code(KeyboardInterrupt()) == 130  # Ctrl-C


def test_backup_carries_the_random_generator_state(tmp_path):
    """save_weights leaves out SeedGenerator states; the backup restores them (the slow
    test_killed_run_with_dropout_resumes_exactly checks the whole effect)."""
    import keras

    from kerasvit.training import checkpoint

    def build():
        keras.utils.set_random_seed(1)
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dropout(0.5)(inputs)))
        model.compile(optimizer="adam", loss="mse")
        return model

    model = build()
    model.optimizer.build(model.trainable_variables)
    (state,) = checkpoint.seed_generator_states(model)
    for _ in range(3):
        model.layers[1].seed_generator.next()
    advanced = keras.ops.convert_to_numpy(state).copy()
    checkpoint.save_backup(model, tmp_path / "backup", 4)
    fresh = build()
    assert not np.array_equal(keras.ops.convert_to_numpy(checkpoint.seed_generator_states(fresh)[0]),
                              advanced)
    assert checkpoint.restore_backup(fresh, tmp_path / "backup") == 4
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(checkpoint.seed_generator_states(fresh)[0]), advanced)
    # On torch, unseeded Dropout draws from torch's global generator: saved as well.
    saved = checkpoint.saved_torch_generator_states(checkpoint.backup_files(tmp_path / "backup")[0])
    assert ("cpu" in saved) == (keras.backend.backend() == "torch")


def test_history_keeps_the_backed_up_epochs_once(tmp_path):
    """A resumed run drops rows of epochs it will redo, duplicates and a row torn by a kill."""
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\n0,1.5\n1,1.2\n1,1.1\n2,0.9\n3,0.")
    folders.truncate_history(path, 2)
    assert path.read_text().splitlines() == ["epoch,loss", "0,1.5", "1,1.1"]
    folders.truncate_history(path, 0)
    assert not path.exists()


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "metrics.json"
    folders.write_json(path, {"old": 1})

    def failing(temporary):
        Path(temporary).write_text('{"new": ')
        raise OSError(28, "No space left on device")

    with pytest.raises(folders.WriteError, match=r"cannot write .*metrics.json \(No space left"):
        folders.write_atomically(path, failing)
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]




def test_best_validation_accuracy_reads_the_history_and_survives_its_loss(tmp_path):
    """A resumed run whose history.csv was deleted still saves its metrics (no best
    validation accuracy then) instead of failing after its training."""
    from kerasvit.training import loop

    history = tmp_path / "history.csv"
    history.write_text("epoch,val_accuracy\n0,0.25\n1,0.5\n2,0.375\n")
    assert loop.best_validation_accuracy(history) == 0.5
    history.unlink()
    assert loop.best_validation_accuracy(history) is None
