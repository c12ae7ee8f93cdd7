"""`python -m kerasvit.train` end to end: run folders, no overwrites, one-line errors, resume."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kerasvit import train

TINY = ["--subset-per-class", "5", "--epochs", "1", "--batch-size", "25",
        "--set", "validation_size=100", "--set", "test_images=500",
        "--set", "model_args.widths=[16, 32, 64]",
        "--set", "model_args.stem_width=16"]
RUN_FILES = ("config.json", "env.json", "history.csv", "model.keras", "metrics.json")


def run_train(args, cwd, backend=None, check=True):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if backend:
        env["KERAS_BACKEND"] = backend
    result = subprocess.run([sys.executable, "-m", "kerasvit.train", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        pytest.fail(f"train exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def run_folders(root):
    return sorted((Path(root) / "runs").iterdir())


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cli")
    first = run_train(["--model", "cnn", *TINY], cwd)
    run_train(["--model", "cnn", *TINY], cwd)
    return cwd, first


def test_run_folder_has_every_file(two_runs, backend):
    cwd, first = two_runs
    run_dir = run_folders(cwd)[0]
    assert run_dir.name.startswith(f"cnn-{backend}-")
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["subset_per_class"] == 5 and config["model_args"]["widths"] == [16, 32, 64]
    env = json.loads((run_dir / "env.json").read_text())
    assert env["backend"] == backend and env["versions"]["keras"] and env["num_devices"] >= 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_images"] == 500
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_loss"] > 0
    assert metrics["train_images_per_s"] > 0
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["0"]
    assert {"loss", "accuracy", "f1", "val_accuracy", "learning_rate"} <= set(rows[0])
    assert "test accuracy" in first.stdout and str(run_dir.name) in first.stdout


def test_second_run_gets_its_own_folder(two_runs):
    cwd, _ = two_runs
    first, second = run_folders(cwd)
    assert first != second and (second / "model.keras").is_file()


def test_existing_run_dir_is_refused_without_touching_it(two_runs):
    cwd, _ = two_runs
    existing = run_folders(cwd)[0]
    before = (existing / "metrics.json").read_bytes()
    result = run_train(["--model", "cnn", *TINY, "--run-dir", str(existing)], cwd, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"kerasvit.train: error: run folder {existing} already exists; choose another "
        f"--run-dir, or pass --resume {existing} to continue it"
    ]
    assert (existing / "metrics.json").read_bytes() == before


@pytest.mark.parametrize("argv, fragment", [
    (["--model", "resnet"], "invalid choice: 'resnet'"),
    (["--epochs", "two"], "invalid int value: 'two'"),
    (["--epochs", "0"], "epochs must be positive"),
    (["--batch-size", "-1"], "batch_size must be positive"),
    (["--set", "epoch=2"], "unknown config key 'epoch'"),
    (["--set", "learning_rate=fast"], "learning_rate must be of type float"),
    (["--set", "model_args.depth=3"], "unknown model argument 'depth'"),
    (["--preset", "x"], "--preset applies only to --model vit_b16"),
    (["--config", "nope.toml"], "config file nope.toml not found"),
    (["--resume", "."], "is not a kerasvit run folder"),
    (["--subset-per-class", "6000"], "larger than the"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, monkeypatch, capsys, argv, fragment):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kerasvit.train: error: ")
    assert fragment in lines[0]
    assert not (tmp_path / "runs").exists()


def test_unknown_backend_is_refused_before_keras_loads(tmp_path):
    result = run_train(["--model", "cnn"], tmp_path, backend="mxnet", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kerasvit.train: error: unknown backend KERAS_BACKEND='mxnet'; set it to one of "
        "tensorflow, jax, torch"
    ]


def test_killed_run_resumes_without_losing_or_repeating_epochs(tmp_path):
    run_dir = tmp_path / "runs" / "killed"
    args = ["--model", "cnn", "--subset-per-class", "5", "--epochs", "4", "--batch-size", "25",
            "--set", "validation_size=50", "--set", "test_images=100",
            "--set", "model_args.widths=[8, 16, 32]",
            "--set", "model_args.stem_width=8", "--run-dir", str(run_dir)]
    process = subprocess.Popen([sys.executable, "-m", "kerasvit.train", *args], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((run_dir / "backup").glob("*")) and time.time() < deadline:
        if process.poll() is not None:
            pytest.fail("training ended before it could be killed")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "metrics.json").exists()

    run_train(["--resume", str(run_dir)], tmp_path)
    with open(run_dir / "history.csv") as f:
        epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert epochs == [0, 1, 2, 3]
    assert (run_dir / "model.keras").is_file() and (run_dir / "metrics.json").is_file()
    again = run_train(["--resume", str(run_dir)], tmp_path, check=False)
    assert again.returncode == 2 and "already finished" in again.stderr
