"""Running kerasvit's CLIs in subprocesses, as a user would; shared by the CLI tests."""

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# A 3-epoch CNN run that takes seconds: 50 training images in batches of 25 (2 steps per
# epoch), 50 validation and 100 test images, a narrow network.
TINY_TRAIN_FLAGS = [
    "--model", "cnn", "--subset-per-class", "5", "--epochs", "3", "--batch-size", "25",
    "--set", "validation_size=50", "--set", "test_images=100",
    "--set", "model_args.widths=[8, 16, 32]", "--set", "model_args.stem_width=8",
]
TINY_EPOCHS = 3


def cli_env(**overrides):
    """os.environ for a child process, with `overrides` (None removes a variable)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def default_sigint():
    # A shell's background jobs inherit SIGINT ignored, and Python then keeps it ignored:
    # the child must get the default (KeyboardInterrupt) whatever ran pytest.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(program, args, cwd, env=None, check=True, timeout=600, preexec_fn=None):
    """Runs `python -m kerasvit.<program> ARGS`; returns the CompletedProcess."""
    result = subprocess.run([sys.executable, "-m", f"kerasvit.{program}", *map(str, args)],
                            cwd=cwd, env=env or cli_env(), capture_output=True, text=True,
                            timeout=timeout, preexec_fn=preexec_fn)
    if check and result.returncode != 0:
        pytest.fail(f"{program} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def run_train(args, cwd, check=True, **env):
    return run_cli("train", args, cwd, env=cli_env(**env), check=check)


def history_rows(run_dir):
    path = Path(run_dir) / "history.csv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))
