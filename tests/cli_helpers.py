"""Running kerasvit's CLIs in subprocesses, as a user would; shared by the CLI tests."""

import contextlib
import csv
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def load_script(name):
    """scripts/<name>.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

# A 3-epoch CNN run that takes seconds: 50 training images in batches of 25 (2 steps per
# epoch), 50 validation and 100 test images, a narrow network.
TINY_TRAIN_FLAGS = [
    "--model", "cnn", "--subset-per-class", "5", "--epochs", "3", "--batch-size", "25",
    "--set", "validation_size=50", "--set", "test_images=100",
    "--set", "model_args.widths=[8, 16, 32]",
    # float32: the tests compare runs and backends to 1e-6, bf16 only to ~1e-2.
    "--mixed-precision", "off",
]
TINY_EPOCHS = 3
# The same run with no --epochs (for --time-budget, which chooses them).
TINY_TRAIN_FLAGS_WITHOUT_EPOCHS = [flag for index, flag in enumerate(TINY_TRAIN_FLAGS)
                                   if "--epochs" not in TINY_TRAIN_FLAGS[max(index - 1, 0):index + 1]]


def cli_env(**overrides):
    """os.environ for a child process, with `overrides` (None removes a variable)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


@contextlib.contextmanager
def child_settings(file_size_limit=None):
    """What a child process inherits, set only while it is started (no preexec_fn: Python
    code between fork and exec can deadlock a multithreaded parent such as JAX):
    - SIGINT as Python's default: a shell's background job inherits it ignored, exec keeps
      "ignored", and the child would never see Ctrl-C;
    - a file-size limit (RLIMIT_FSIZE), when asked."""
    previous_sigint = signal.getsignal(signal.SIGINT)
    if previous_sigint == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    previous_limit = None
    if file_size_limit:
        import resource

        previous_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, previous_limit[1]))
    try:
        yield
    finally:
        if previous_limit:
            resource.setrlimit(resource.RLIMIT_FSIZE, previous_limit)
        if previous_sigint == signal.SIG_IGN:
            signal.signal(signal.SIGINT, previous_sigint)


def start_cli(program, args, cwd, env=None, file_size_limit=None, **popen):
    """Starts `python -m kerasvit.<program> ARGS`; returns the Popen."""
    with child_settings(file_size_limit):
        return subprocess.Popen([sys.executable, "-m", f"kerasvit.{program}", *map(str, args)],
                                cwd=cwd, env=env or cli_env(), text=True, **popen)


def run_cli(program, args, cwd, env=None, check=True, timeout=600, file_size_limit=None):
    """Runs `python -m kerasvit.<program> ARGS`; returns the CompletedProcess."""
    process = start_cli(program, args, cwd, env, file_size_limit, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        pytest.fail(f"{program} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def run_train(args, cwd, check=True, **env):
    return run_cli("train", args, cwd, env=cli_env(**env), check=check)


def train_error_line(argv, tmp_path, monkeypatch, capsys):
    """kerasvit.train.main(argv) run in this process from tmp_path: asserts exit code 2, one
    error line and no runs/ folder made; returns the line."""
    from kerasvit.cli import train

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kerasvit.train: error: ")
    assert not (tmp_path / "runs").exists()
    return lines[0]


def history_rows(run_dir):
    path = Path(run_dir) / "history.csv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def png_bytes(size=(40, 30)):
    """A small valid PNG file's bytes (a colour ramp), for the image-reading commands."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.arange(size[0] * size[1] * 3, dtype=np.uint8).reshape(size[1], size[0], 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def png_claiming(width, height):
    """A tiny PNG whose header claims width x height pixels: a decompression bomb in shape
    (its data is cut short, so nothing may try to decode it)."""
    import struct
    import zlib

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))
