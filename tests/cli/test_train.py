"""`python -m kerasvit.train` end to end: run folders, no overwrites, one-line errors.
(Kill/resume: tests/training/test_resume.py; the table of bad inputs: tests/test_bad_inputs.py.)"""

import json

import pytest
from cli_helpers import (
    REPO,
    TINY_EPOCHS,
    TINY_TRAIN_FLAGS,
    history_rows,
    run_train,
    train_error_line,
)
from suite_passes import in_one_pass

from kerasvit.cli import train
from kerasvit.models import pretrained
from kerasvit.runs import folders

RUN_FILES = ("config.json", "env.json", "history.csv", "model.keras", "metrics.json")


def run_folders(root):
    return sorted((root / "runs").iterdir())


def test_run_folder_has_every_file(tiny_cnn_run, backend):
    cwd, first, run_dir = tiny_cnn_run
    assert run_folders(cwd) == [run_dir]
    assert run_dir.name.startswith(f"cnn-{backend}-")
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "backup").exists()  # a finished run keeps no backup
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["subset_per_class"] == 5 and config["model_args"]["widths"] == [8, 16, 32]
    env = json.loads((run_dir / "env.json").read_text())
    assert env["backend"] == backend and env["versions"]["keras"] and env["num_devices"] >= 1
    assert env["jit_compile"] == {"setting": "auto", "value": backend == "jax",
                                  "reason": env["jit_compile"]["reason"]}
    assert env["jit_compile"]["reason"].startswith(f"auto: {backend} on the CPU")
    layout = "channels_first" if backend == "torch" else "channels_last"
    assert env["data_format"]["value"] == layout and env["data_format"]["setting"] == "auto"
    assert f"image layout {layout}" in first.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_images"] == 100 and "resumed_after_epochs" not in metrics
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_loss"] > 0
    assert metrics["train_images_per_s"] > 0
    rows = history_rows(run_dir)
    assert [int(row["epoch"]) for row in rows] == list(range(TINY_EPOCHS))
    assert {"loss", "accuracy", "f1", "val_accuracy", "learning_rate"} <= set(rows[0])
    assert "test accuracy" in first.stdout and str(run_dir.name) in first.stdout


@in_one_pass("the test images are chosen by the data pipeline, before any backend")
def test_test_per_class_is_used_and_recorded(tmp_path):
    # The tiny run of TINY_TRAIN_FLAGS, one epoch, tested on 3 images of each class.
    run_train(["--model", "cnn", "--subset-per-class", "5", "--epochs", "1", "--batch-size", "25",
               "--set", "validation_size=50", "--set", "model_args.widths=[8, 16, 32]",
               "--mixed-precision", "off", "--test-per-class", "3"], tmp_path)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "config.json").read_text())["test_per_class"] == 3
    assert json.loads((run_dir / "metrics.json").read_text())["test_images"] == 30


def test_second_run_gets_its_own_folder(tmp_path):
    """Runs started in the same second get numbered folders (the name has the time in it)."""
    first = folders.new_run_dir("cnn", "torch", root=tmp_path)
    second = folders.new_run_dir("cnn", "torch", root=tmp_path)
    assert first != second and first.is_dir() and second.is_dir()
    if second.name.startswith(first.name):  # the same second (else the time differs)
        assert second.name == f"{first.name}-2"


def test_existing_run_dir_is_refused_without_touching_it(tiny_cnn_run):
    cwd, _, existing = tiny_cnn_run
    before = (existing / "metrics.json").read_bytes()
    result = run_train([*TINY_TRAIN_FLAGS, "--run-dir", str(existing)], cwd, check=False)
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
    (["--preset", "x"], "--preset applies only to --model vit_b16 or pretrained, not cnn"),
    (["--config", "nope.toml"], "config file nope.toml not found"),
    (["--resume", "."], "is not a kerasvit run folder"),
    (["--subset-per-class", "6000"], "larger than the"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, monkeypatch, capsys, argv, fragment):
    assert fragment in train_error_line(argv, tmp_path, monkeypatch, capsys)


def test_unknown_backend_is_refused_before_keras_loads(tmp_path):
    result = run_train(["--model", "cnn"], tmp_path, check=False, KERAS_BACKEND="mxnet")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kerasvit.train: error: unknown backend KERAS_BACKEND='mxnet'; set it to one of "
        "tensorflow, jax, torch"
    ]


@pytest.mark.parametrize("argv, learning_rate", [
    # A full fine-tune's config: --finetune linear brings the probe's rate with it.
    (["--model", "pretrained"], 1e-4),
    (["--model", "pretrained", "--finetune", "linear"], pretrained.LINEAR_PROBE_LEARNING_RATE),
    (["--config", "configs/pretrained_deit.toml", "--finetune", "linear"],
     pretrained.LINEAR_PROBE_LEARNING_RATE),
    (["--model", "vit_b16", "--finetune", "linear"], pretrained.LINEAR_PROBE_LEARNING_RATE),
    # The user's rate wins, by flag or by --set; a linear config keeps its own.
    (["--model", "pretrained", "--finetune", "linear", "--learning-rate", "0.01"], 0.01),
    (["--model", "pretrained", "--finetune", "linear", "--set", "learning_rate=0.02"], 0.02),
    (["--config", "{tmp}/my_probe.toml", "--finetune", "linear"], 5e-3),
])
def test_finetune_linear_takes_the_linear_probe_learning_rate(argv, learning_rate, monkeypatch,
                                                              tmp_path):
    (tmp_path / "my_probe.toml").write_text(
        'model = "pretrained"\nlearning_rate = 5e-3\n[model_args]\nfinetune = "linear"\n')
    monkeypatch.chdir(REPO)
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    config = train.resolve_config(train.parse_args(argv))
    assert config.learning_rate == pytest.approx(learning_rate)
    assert config.model_args["finetune"] == ("linear" if "linear" in argv else "full")
