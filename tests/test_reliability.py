"""Reliability (issue 9): interrupted runs resume exactly, bad input gets one clear line,
unsafe files are refused.

- The kill/resume chain runs the real CLI, stops it at exact points (the process announces
  each pause point on stdout and waits; see kerasvit.runs.folders.pause_point), kills it there with
  SIGKILL, SIGTERM or SIGINT, resumes, and compares the result with an unbroken run.
- BAD_INPUTS is the table of bad input: every row runs a CLI in a subprocess and must end
  with exit code 2 and exactly one stderr line naming the problem and the fix, with no
  traceback and nothing written or changed. Add a row for every new way to fail.
- Security: Lambda layers (Python code) refused without --unsafe-load, no pickle, the demo
  on localhost.
- Property-based tests (hypothesis) of config overrides and of predict's image input.
"""

import dataclasses
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import (
    TINY_EPOCHS,
    TINY_TRAIN_FLAGS,
    TINY_TRAIN_FLAGS_WITHOUT_EPOCHS,
    cli_env,
    history_rows,
    run_cli,
    run_train,
    start_cli,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, features

from kerasvit import config as cfg
from kerasvit.cli import predict
from kerasvit.runs import folders

REPO = Path(__file__).resolve().parent.parent
KERASVIT = REPO / "kerasvit"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def free_port():
    """A local port with nothing listening on it: a proxy there refuses every connection."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


DEAD_PROXY = f"http://127.0.0.1:{free_port()}"


# ================================================================ files the rows use

def png_claiming(width, height):
    """A tiny PNG whose header claims width x height pixels: a decompression bomb in shape
    (its data is cut short, so nothing may try to decode it)."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))


def png_bytes(size=(40, 30)):
    pixels = np.arange(size[0] * size[1] * 3, dtype=np.uint8).reshape(size[1], size[0], 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def corrupt_member(source, target, member="model.weights.h5"):
    """A copy of a .keras archive with bytes flipped in the middle of one member's data
    (the zip structure stays valid; the member's checksum no longer matches)."""
    data = bytearray(Path(source).read_bytes())
    with zipfile.ZipFile(source) as archive:
        info = archive.getinfo(member)
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length + info.compress_size // 2
    data[start:start + 16] = bytes(b ^ 0xFF for b in data[start:start + 16])
    Path(target).write_bytes(bytes(data))


RESNET_PRESET_CONFIG = {  # config.json as keras-hub's save_to_preset writes it
    "module": "keras_hub.src.models.resnet.resnet_backbone",
    "class_name": "ResNetBackbone",
    "config": {"name": "res_net_backbone", "trainable": True, "input_conv_filters": [8],
               "input_conv_kernel_sizes": [3], "stackwise_num_filters": [8],
               "stackwise_num_blocks": [1], "stackwise_num_strides": [1],
               "block_type": "basic_block", "image_shape": [32, 32, 3]},
    "registered_name": "keras_hub>ResNetBackbone",
}


def make_resnet_preset(folder):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(RESNET_PRESET_CONFIG))
    (folder / "metadata.json").write_text(json.dumps({"keras_version": "3.15.1",
                                                      "keras_hub_version": "0.32.0"}))


def make_finished_run(folder, reference):
    folder.mkdir()
    shutil.copy(reference / "config.json", folder / "config.json")
    shutil.copy(reference / "metrics.json", folder / "metrics.json")


# name -> how to make it in the row's folder, from the shared sources (reference run folder,
# model with a Lambda layer). Rows name what they need in `files`; "{name}" in their
# arguments is its path.
MAKERS = {
    "image.png": lambda path, src: path.write_bytes(png_bytes()),
    "notes.txt": lambda path, src: path.write_text("these are not pixels\n"),
    "empty.png": lambda path, src: path.write_bytes(b""),
    "truncated.png": lambda path, src: path.write_bytes(png_bytes((200, 200))[:300]),
    "huge.png": lambda path, src: path.write_bytes(png_claiming(6000, 5000)),
    "bomb.png": lambda path, src: path.write_bytes(png_claiming(50_000, 50_000)),
    "folder": lambda path, src: path.mkdir(),
    "a-file": lambda path, src: path.write_text("a file, not a folder\n"),
    "tfds-empty": lambda path, src: path.mkdir(),
    "model.keras": lambda path, src: shutil.copy(src["reference"] / "model.keras", path),
    "empty.keras": lambda path, src: path.write_bytes(b""),
    "truncated.keras": lambda path, src: path.write_bytes(
        (src["reference"] / "model.keras").read_bytes()[:20_000]),
    "corrupted.keras": lambda path, src: corrupt_member(src["reference"] / "model.keras", path),
    "foreign.keras": lambda path, src: write_zip(path, {"readme.txt": "made by another program"}),
    "lambda.keras": lambda path, src: shutil.copy(src["lambda_model"], path),
    "finished-run": lambda path, src: make_finished_run(path, src["reference"]),
    "resnet-preset": lambda path, src: make_resnet_preset(path),
}


def write_zip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)


# ================================================================ the table

@dataclasses.dataclass(frozen=True)
class BadInput:
    """One way to get it wrong: `program` (train, evaluate, predict) run with `args` must
    exit with code 2 and print exactly one stderr line that contains `problem` and `fix`.

    `files` are made in the row's folder first (see MAKERS; "{name}" in args or env is the
    path, "{tmp}" the folder); "readonly" and "full" are special locations (fixtures).
    Nothing in the folder may change, unless `writes` names the check of a run that is
    allowed to write (it failed midway: NaN loss, full disk)."""

    id: str
    program: str
    args: tuple
    problem: str
    fix: str
    files: tuple = ()
    env: tuple = ()  # (name, value or None to unset)
    writes: str = ""
    expensive: bool = False  # imports keras or trains: seconds, not a fraction of one

    def param(self):
        return pytest.param(self, id=self.id)


OFFLINE_ENV = (("TFDS_DATA_DIR", "{tfds-empty}"),
               *((name, DEAD_PROXY) for name in ("http_proxy", "https_proxy", "HTTP_PROXY",
                                                 "HTTPS_PROXY", "all_proxy", "ALL_PROXY")),
               ("no_proxy", None), ("NO_PROXY", None))
TINY = tuple(TINY_TRAIN_FLAGS)

BAD_INPUTS = [
    # ---- train: flags and config (model_args.* names are checked against the builder after
    # the keras import: test_train.py runs that row in-process)
    BadInput("unknown-model", "train", ("--model", "resnet"), "invalid choice: 'resnet'",
             "choose from"),
    BadInput("unknown-backend", "train", ("--model", "cnn"), "unknown backend KERAS_BACKEND='mxnet'",
             "set it to one of tensorflow, jax, torch", env=(("KERAS_BACKEND", "mxnet"),)),
    BadInput("unknown-config-key", "train", ("--set", "epoch=2"), "unknown config key 'epoch'",
             "known keys:"),
    BadInput("wrong-type-set", "train", ("--set", "learning_rate=fast"),
             "learning_rate must be of type float", "got 'fast'"),
    BadInput("wrong-type-flag", "train", ("--epochs", "two"), "invalid int value: 'two'",
             "see --help"),
    BadInput("wrong-type-bool", "train", ("--set", "mixed_precision=maybe"),
             "mixed_precision must be one of auto, on, off", "got 'maybe'"),
    BadInput("nan-learning-rate", "train", ("--set", "learning_rate=nan"),
             "learning_rate must be a finite number", "got nan"),
    BadInput("zero-epochs", "train", ("--epochs", "0"), "epochs must be positive", "got 0"),
    BadInput("negative-epochs", "train", ("--epochs", "-3"), "epochs must be positive", "got -3"),
    BadInput("zero-batch-size", "train", ("--batch-size", "0"), "batch_size must be positive",
             "got 0"),
    BadInput("negative-batch-size", "train", ("--batch-size", "-8"),
             "batch_size must be positive", "got -8"),
    BadInput("time-budget-and-epochs", "train", ("--time-budget", "10", "--epochs", "3"),
             "pass either --epochs or --time-budget", "the time budget chooses the number of epochs"),
    BadInput("negative-time-budget", "train", ("--time-budget", "-5"),
             "time_budget_minutes must be >= 0", "got -5.0"),
    BadInput("time-budget-too-short", "train",
             (*TINY_TRAIN_FLAGS_WITHOUT_EPOCHS, "--time-budget", "0.05"),
             "--time-budget 0.05 minutes is too short for one epoch", "give at least",
             expensive=True),
    BadInput("subset-larger-than-data", "train", ("--subset-per-class", "6000"),
             "subset_per_class 6000 is larger than the 4500 training images per class",
             "use at most 4500"),
    BadInput("batch-larger-than-data", "train", ("--subset-per-class", "2", "--batch-size", "64"),
             "batch_size 64 is larger than the 20 training images", "lower --batch-size"),
    BadInput("test-images-larger-than-data", "train", ("--set", "test_images=20000"),
             "test_images 20000 is larger than the 10000", "use at most 10000"),
    BadInput("missing-config-file", "train", ("--config", "{tmp}/nope.toml"), "not found",
             "pass an existing file to --config"),
    BadInput("missing-data-offline", "train", TINY, "CIFAR-10 is not in",
             "pass --data-dir DIR or set TFDS_DATA_DIR", files=("tfds-empty",), env=OFFLINE_ENV,
             expensive=True),
    # ---- train: presets
    BadInput("missing-preset-folder", "train", ("--model", "vit_b16", "--preset", "{tmp}/no-preset"),
             "preset folder {tmp}/no-preset does not exist", "pass a folder made with save_to_preset"),
    BadInput("preset-is-a-file", "train", ("--model", "vit_b16", "--preset", "{a-file}"),
             "is a file", "pass the folder that save_to_preset wrote", files=("a-file",)),
    BadInput("preset-without-config", "train", ("--model", "vit_b16", "--preset", "{folder}"),
             "is not a keras-hub preset (no config.json)", "save_to_preset", files=("folder",)),
    BadInput("preset-of-another-architecture", "train",
             ("--model", "vit_b16", "--preset", "{resnet-preset}"),
             "holds a ResNetBackbone model, not a ViT", "needs a ViT preset",
             files=("resnet-preset",)),
    # ---- train: run folders
    BadInput("resume-not-a-run", "train", ("--resume", "{folder}"),
             "is not a kerasvit run folder (no config.json)", "pass the folder of an interrupted run",
             files=("folder",)),
    BadInput("resume-a-file", "train", ("--resume", "{a-file}"), "is not a folder",
             "pass the folder of an interrupted run", files=("a-file",)),
    BadInput("resume-finished-run", "train", ("--resume", "{finished-run}"), "already finished",
             "start a new run", files=("finished-run",)),
    BadInput("existing-run-folder", "train", (*TINY, "--run-dir", "{folder}"), "already exists",
             "choose another --run-dir, or pass --resume", files=("folder",)),
    BadInput("run-folder-under-a-file", "train", (*TINY, "--run-dir", "{a-file}/run"),
             "is a file, not a folder", "choose another --run-dir", files=("a-file",)),
    BadInput("read-only-output", "train", (*TINY, "--run-dir", "{readonly}/run"),
             "is read-only or not writable", "choose a writable --run-dir", files=("readonly",)),
    # ---- train: failures midway (the run folder is written, by design)
    # A warmup from zero keeps the first epoch finite; the second one blows up.
    BadInput("nan-loss", "train",
             (*TINY, "--run-dir", "{tmp}/nan-run", "--batch-size", "50", "--learning-rate", "1e38",
              "--set", "warmup_epochs=1", "--set", "schedule=warmup_cosine"),
             "the loss became NaN or infinite; the last good state (after epoch 1) is kept",
             "Start a new run with a lower --learning-rate", writes="nan", expensive=True),
    BadInput("full-output-location", "train", (*TINY, "--run-dir", "{full}/run"),
             "cannot write", "free some space there (or make it writable), then resume with: "
             "KERAS_BACKEND=", files=("full",), writes="full", expensive=True),
    # ---- evaluate: model files and output folders
    BadInput("evaluate-unknown-backend", "evaluate", ("{model.keras}",),
             "unknown backend KERAS_BACKEND='mxnet'", "set it to one of",
             files=("model.keras",), env=(("KERAS_BACKEND", "mxnet"),)),
    BadInput("evaluate-missing-file", "evaluate", ("{tmp}/missing.keras",), "does not exist",
             "pass a run folder or a .keras file"),
    BadInput("evaluate-folder-without-model", "evaluate", ("{folder}",),
             "is a folder without model.keras", "pass a finished kerasvit run folder",
             files=("folder",)),
    BadInput("evaluate-not-keras-suffix", "evaluate", ("{notes.txt}",), "is not a .keras file",
             "pass a run folder or a .keras file", files=("notes.txt",)),
    BadInput("evaluate-empty-keras", "evaluate", ("{empty.keras}",),
             "truncated or not a zip archive", "save or copy it again", files=("empty.keras",)),
    BadInput("evaluate-truncated-keras", "evaluate", ("{truncated.keras}",),
             "truncated or not a zip archive", "save or copy it again",
             files=("truncated.keras",)),
    BadInput("evaluate-corrupted-keras", "evaluate", ("{corrupted.keras}",),
             "is corrupted (model.weights.h5 fails its checksum)", "save or copy it again",
             files=("corrupted.keras",)),
    BadInput("evaluate-keras-from-another-program", "evaluate", ("{foreign.keras}",),
             "is a zip archive but not a Keras model", "written by another program",
             files=("foreign.keras",)),
    BadInput("evaluate-lambda-layer", "evaluate", ("{lambda.keras}",),
             "holds Python code (Lambda layer 'code')", "pass --unsafe-load",
             files=("lambda.keras",)),
    BadInput("evaluate-read-only-out", "evaluate", ("{model.keras}", "--out", "{readonly}/report"),
             "is read-only or not writable", "choose a writable --out",
             files=("model.keras", "readonly")),
    BadInput("evaluate-out-under-a-file", "evaluate", ("{model.keras}", "--out", "{a-file}/report"),
             "is a file, not a folder", "choose another --out", files=("model.keras", "a-file")),
    BadInput("evaluate-zero-batch-size", "evaluate", ("{model.keras}", "--batch-size", "0"),
             "--batch-size must be at least 1", "got 0", files=("model.keras",)),
    # ---- predict: image files and model files
    BadInput("predict-unknown-backend", "predict", ("--model", "{model.keras}", "{image.png}"),
             "unknown backend KERAS_BACKEND='mxnet'", "set it to one of",
             files=("model.keras", "image.png"), env=(("KERAS_BACKEND", "mxnet"),)),
    BadInput("predict-non-image-file", "predict", ("--model", "{model.keras}", "{notes.txt}"),
             "notes.txt: not an image file", "expected a PNG or JPEG",
             files=("model.keras", "notes.txt")),
    BadInput("predict-empty-file", "predict", ("--model", "{model.keras}", "{empty.png}"),
             "empty.png: not an image file", "expected a PNG or JPEG",
             files=("model.keras", "empty.png")),
    BadInput("predict-truncated-image", "predict", ("--model", "{model.keras}", "{truncated.png}"),
             "truncated.png: cannot be decoded", "expected a PNG or JPEG",
             files=("model.keras", "truncated.png")),
    BadInput("predict-huge-image", "predict", ("--model", "{model.keras}", "{huge.png}"),
             "huge.png: is 6000x5000 pixels (30 megapixels)", "resize it first",
             files=("model.keras", "huge.png")),
    BadInput("predict-decompression-bomb", "predict", ("--model", "{model.keras}", "{bomb.png}"),
             "bomb.png: has over 25 megapixels (a possible decompression bomb)", "resize it first",
             files=("model.keras", "bomb.png")),
    BadInput("predict-folder-as-image", "predict", ("--model", "{model.keras}", "{folder}"),
             "is a folder, not an image file", "pass the image files themselves",
             files=("model.keras", "folder")),
    BadInput("predict-missing-image", "predict", ("--model", "{model.keras}", "{tmp}/cat.png"),
             "cat.png: no such file", "check the path", files=("model.keras",)),
    BadInput("predict-truncated-keras", "predict", ("--model", "{truncated.keras}", "{image.png}"),
             "truncated or not a zip archive", "save or copy it again",
             files=("truncated.keras", "image.png")),
    BadInput("predict-keras-from-another-program", "predict",
             ("--model", "{foreign.keras}", "{image.png}"), "is a zip archive but not a Keras model",
             "written by another program", files=("foreign.keras", "image.png")),
    BadInput("predict-lambda-layer", "predict", ("--model", "{lambda.keras}", "{image.png}"),
             "holds Python code (Lambda layer 'code')", "pass --unsafe-load",
             files=("lambda.keras", "image.png")),
    BadInput("predict-folder-as-model", "predict", ("--model", "{folder}", "{image.png}"),
             "is a folder without model.keras", "pass a finished kerasvit run folder",
             files=("folder", "image.png")),
]


# ---------------------------------------------------------------- special locations

@pytest.fixture
def readonly_location(tmp_path):
    """A folder this process cannot write into: chmod 555, or (as root, who writes through
    permission bits) a read-only tmpfs mounted there."""
    path = tmp_path / "readonly"
    path.mkdir()
    if not IS_ROOT:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip("running as root, which writes through chmod, and no read-only tmpfs "
                    f"can be mounted here: {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


FULL_SIZE = 96 * 1024  # config, env, history and TensorBoard fit; the first backup does not


@pytest.fixture
def full_location(tmp_path):
    """(folder, file-size limit or None): a folder on a tiny tmpfs (as root) that fills up
    at the first backup; elsewhere a file-size limit (RLIMIT_FSIZE) for the child, which
    fails writes beyond it as a full disk does, with EFBIG instead of ENOSPC."""
    path = tmp_path / "full"
    path.mkdir()
    if IS_ROOT:
        mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FULL_SIZE}", "tmpfs",
                                str(path)], capture_output=True, text=True)
        if mount.returncode == 0:
            try:
                yield path, None
            finally:
                subprocess.run(["umount", str(path)], capture_output=True)
            return
    yield path, FULL_SIZE


# ---------------------------------------------------------------- shared sources

@pytest.fixture(scope="module")
def reference_run(tiny_cnn_run):
    """The unbroken tiny run (shared with test_train.py)."""
    return tiny_cnn_run[2]


def code_that_creates(marker):
    # A closure, not a default argument: Keras 3.15 cannot load a lambda's defaults.
    return lambda t: (open(marker, "a").close(), t / 255.0)[1]


@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory):
    """A small .keras model with a Lambda layer named 'code' whose Python function, when
    run, creates the file `marker`: proof of whether loading ran the code."""
    import keras

    folder = tmp_path_factory.mktemp("lambda")
    marker = folder / "code-ran"
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(code_that_creates(str(marker)), name="code")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    path = folder / "lambda.keras"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns that lambdas are unsafe: that's the point
        model.save(path)
    marker.unlink()  # it ran while the model was built
    return path, marker


def sources_for(row, request):
    sources = {}
    needed = set(row.files)
    if needed & {"model.keras", "truncated.keras", "corrupted.keras", "finished-run"}:
        sources["reference"] = request.getfixturevalue("reference_run")
    if "lambda.keras" in needed:
        sources["lambda_model"] = request.getfixturevalue("lambda_model")[0]
    return sources


def make_row_files(row, tmp, request):
    """Makes the row's files; returns ({placeholder: path}, file-size limit for the child)."""
    places, file_size_limit = {"tmp": str(tmp)}, None
    sources = sources_for(row, request)
    for name in row.files:
        if name == "readonly":
            places[name] = str(request.getfixturevalue("readonly_location"))
        elif name == "full":
            path, file_size_limit = request.getfixturevalue("full_location")
            places[name] = str(path)
        else:
            MAKERS[name](tmp / name, sources)
            places[name] = str(tmp / name)
    return places, file_size_limit


def fill(text, places):
    return re.sub(r"\{([^{}]+)\}", lambda m: places.get(m.group(1), m.group(0)), text)


def snapshot(root):
    """Every path under `root` with its size and content hash."""
    state = {}
    for path in sorted(Path(root).rglob("*")):
        digest = hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        state[str(path.relative_to(root))] = digest
    return state


def cheap_rows():
    return [row.param() for row in BAD_INPUTS if not row.expensive]


HEAVY_MODULES = ("keras", "keras_hub", "tensorflow", "jax", "torch")


@pytest.fixture(scope="session")
def no_frameworks(tmp_path_factory):
    """A PYTHONPATH entry whose keras, tensorflow, jax and torch fail on import: a cheap row
    that imports one (seconds of start-up before its error line) fails loudly."""
    folder = tmp_path_factory.mktemp("no-frameworks")
    for name in HEAVY_MODULES:
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text(
            f"raise ImportError('this bad input must be refused before {name} is imported')\n")
    return str(folder)


def expensive_rows():
    return [row.param() for row in BAD_INPUTS if row.expensive]


def check_bad_input(row, tmp_path, request, pythonpath=None):
    places, file_size_limit = make_row_files(row, tmp_path, request)
    cwd = tmp_path / "cwd"  # a default runs/ folder would appear here
    cwd.mkdir()
    before = snapshot(tmp_path)
    env = cli_env(**{name: None if value is None else fill(value, places)
                     for name, value in row.env})
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    args = [fill(arg, places) for arg in row.args]
    result = run_cli(row.program, args, cwd, env=env, check=False,
                     file_size_limit=file_size_limit)
    lines = result.stderr.strip().splitlines()
    shown = f"exit {result.returncode}\nstderr:\n{result.stderr[-3000:]}"
    assert result.returncode == 2, shown
    assert "Traceback" not in result.stderr + result.stdout, shown
    assert len(lines) == 1 and lines[0].startswith(f"kerasvit.{row.program}: error: "), shown
    assert fill(row.problem, places) in lines[0], shown
    assert row.fix in lines[0], shown
    if row.writes:
        WRITE_CHECKS[row.writes](places, lines[0], result)
    else:
        assert snapshot(tmp_path) == before, "the refused command wrote or changed files"
    return lines[0]


@pytest.mark.parametrize("row", cheap_rows())
def test_bad_input_gets_one_line_and_writes_nothing(row, tmp_path, request, no_frameworks):
    check_bad_input(row, tmp_path, request, pythonpath=no_frameworks)


@pytest.mark.parametrize("row", expensive_rows())
def test_bad_input_found_after_imports_or_training(row, tmp_path, request):
    check_bad_input(row, tmp_path, request)


def check_nan_run(places, line, result):
    """NaN stops training; the last good backup stays, no model or metrics are written."""
    run_dir = Path(places["tmp"]) / "nan-run"
    assert sorted(p.name for p in (run_dir / "backup").iterdir()) == ["epoch-00001.weights.h5"]
    assert not (run_dir / "model.keras").exists() and not (run_dir / "metrics.json").exists()
    rows = history_rows(run_dir)
    assert math.isfinite(float(rows[0]["loss"])) and math.isfinite(float(rows[0]["val_loss"]))
    assert not all(math.isfinite(float(rows[1][key])) for key in ("loss", "val_loss"))
    assert str(run_dir / "backup") in line


def check_full_run(places, line, result):
    """A full disk fails the first backup: one line, and no torn or half-written file."""
    run_dir = Path(places["full"]) / "run"
    assert re.search(r"\((No space left on device|File too large)\)", line), line
    assert f"--resume {run_dir}" in line
    json.loads((run_dir / "config.json").read_text())
    assert not list(run_dir.rglob("*partial*")), "a half-written file was left behind"
    assert not (run_dir / "backup").exists() or not list((run_dir / "backup").iterdir())
    assert not (run_dir / "model.keras").exists() and not (run_dir / "metrics.json").exists()


WRITE_CHECKS = {"nan": check_nan_run, "full": check_full_run}


@pytest.mark.skipif(IS_ROOT, reason="root reads every file whatever its permissions")
def test_unreadable_preset_folder(tmp_path):
    preset = tmp_path / "preset"
    make_resnet_preset(preset)
    preset.chmod(0)
    try:
        result = run_cli("train", ["--model", "vit_b16", "--preset", preset], tmp_path, check=False)
    finally:
        preset.chmod(0o755)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"kerasvit.train: error: preset folder {preset} is not readable (permission denied); "
        "fix its permissions or pass another --preset"]


# ================================================================ kill and resume

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


# ================================================================ security

def test_lambda_layer_code_runs_only_with_unsafe_load(lambda_model, tmp_path, capsys):
    """Refused in safe mode before keras even reads the file (the code never runs); loaded,
    and its code run, only with --unsafe-load."""
    path, marker = lambda_model
    image = tmp_path / "image.png"
    image.write_bytes(png_bytes())
    with pytest.raises(SystemExit) as refused:
        predict.main(["--model", str(path), str(image)])
    assert refused.value.code == 2
    assert "--unsafe-load" in capsys.readouterr().err
    assert not marker.exists()
    assert predict.main(["--model", str(path), "--unsafe-load", "--top-k", "2", str(image)]) == 0
    assert "1. " in capsys.readouterr().out
    assert marker.exists()  # this is what --unsafe-load allows
    marker.unlink()


def test_code_that_the_scan_misses_is_still_refused_by_keras_safe_mode(lambda_model, monkeypatch):
    """The pre-check is a convenience; Keras' own safe mode remains the guard."""
    from kerasvit.runs import loading

    path, marker = lambda_model
    monkeypatch.setattr(loading, "find_python_code", lambda config: None)
    with pytest.raises(loading.UnsafeModelError, match="--unsafe-load"):
        loading.load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("program", ["evaluate", "predict", "explain", "demo"])
def test_every_model_loading_cli_has_unsafe_load(program):
    import importlib

    module = importlib.import_module(f"kerasvit.cli.{program}")
    argv = ["--model", "m.keras", "x.png"] if program == "predict" else ["m.keras"]
    assert module.parse_args([*argv, "--unsafe-load"]).unsafe_load is True
    assert module.parse_args(argv).unsafe_load is False


@pytest.mark.parametrize("program", ["explain", "demo"])
def test_explain_and_demo_refuse_a_lambda_layer(program, lambda_model, capsys):
    import importlib

    path, marker = lambda_model
    with pytest.raises(SystemExit) as refused:
        importlib.import_module(f"kerasvit.cli.{program}").main([str(path)])
    assert refused.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--unsafe-load" in lines[0], lines
    assert not marker.exists()


UNSAFE_PATTERNS = {
    r"\bimport pickle\b|\bpickle\.load": "pickle",
    r"allow_pickle\s*=\s*True": "np.load with allow_pickle=True",
    r"\btorch\.load\(": "torch.load (pickle underneath)",
    r"\b(dill|cloudpickle|joblib|marshal)\b": "another pickle-like loader",
    r"safe_mode\s*=\s*False\s*[,)]|enable_unsafe_deserialization":
        "Keras unsafe mode outside --unsafe-load",
    r"\beval\(|\bexec\(": "eval/exec",
}


def test_no_pickle_or_unsafe_loading_in_the_package():
    """Nothing untrusted is unpickled: np.load keeps allow_pickle=False (its default),
    .keras files load in safe mode except through --unsafe-load."""
    found = []
    for path in sorted(KERASVIT.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#")[0]
            for pattern, what in UNSAFE_PATTERNS.items():
                if re.search(pattern, code):
                    found.append(f"{path.relative_to(REPO)}:{number}: {what}: {line.strip()}")
    assert not found, "\n".join(found)
    assert "safe_mode=not unsafe_load" in (KERASVIT / "runs" / "loading.py").read_text()


def test_demo_listens_on_localhost_unless_told_otherwise():
    from types import SimpleNamespace

    from kerasvit.cli import demo

    assert demo.parse_args(["runs/x"]).host == "127.0.0.1"

    class Page:
        def queue(self):
            return self

        def launch(self, **options):
            self.options = options

        def block_thread(self):
            pass

    page = Page()
    served = SimpleNamespace(name="cnn", source="runs/x", backend="torch")
    demo.serve(page, served, demo.parse_args(["runs/x"]).host, 7860)
    assert page.options["server_name"] == "127.0.0.1"
    assert not page.options.get("share")


# ================================================================ properties (hypothesis)

VALUE_FIELDS = {name: kind for name, kind in cfg.FIELD_TYPES.items() if kind in (int, float, bool, str)}
BOOL_WORDS = {"true": True, "1": True, "yes": True, "on": True,
              "false": False, "0": False, "no": False, "off": False}
PRECISION_CHOICES = ("auto", "on", "off")
PRECISION_WORDS = {"auto": "auto", "on": "on", "off": "off", "true": "on", "yes": "on", "1": "on",
                   "false": "off", "no": "off", "0": "off"}


@st.composite
def typed_assignment(draw):
    """(KEY=VALUE text, the value it must set) for a random field and a value of its type."""
    name = draw(st.sampled_from(sorted(VALUE_FIELDS)))
    kind = VALUE_FIELDS[name]
    if kind is bool:
        word = draw(st.sampled_from(sorted(BOOL_WORDS)))
        text = draw(st.sampled_from([word, word.upper(), f" {word} "]))
        return f"{name}={text}", BOOL_WORDS[word]
    if kind is int:
        value = draw(st.integers(-10**12, 10**12))
        return f"{name}={value}", value
    if kind is float:
        value = draw(st.floats(allow_nan=False, allow_infinity=False))
        return f"{name}={value!r}", value
    if name == "mixed_precision":  # a choice, or a boolean word from configs before "auto"
        word = draw(st.sampled_from(sorted(PRECISION_WORDS)))
        text = draw(st.sampled_from([word, word.upper()])) if word not in PRECISION_CHOICES else word
        return f"{name}={text}", PRECISION_WORDS[word]
    value = draw(st.text())
    return f"{name}={value}", value


@given(typed_assignment())
def test_override_of_the_right_type_round_trips(assignment):
    text, value = assignment
    config = cfg.apply_overrides(cfg.TrainConfig(), [text])
    assert getattr(config, text.split("=", 1)[0]) == value
    # ... and survives config.json (what --resume reads).
    assert cfg.config_from_dict(json.loads(json.dumps(config.to_dict()))) == config


KEYS = st.one_of(st.sampled_from(sorted(cfg.FIELD_TYPES)), st.text(max_size=20),
                 st.sampled_from(["model_args", "model_args.", "model_args.widths"]))
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=6)


@given(st.lists(st.tuples(KEYS, st.text()), max_size=4))
def test_any_override_text_is_accepted_or_a_config_error(pairs):
    assignments = [f"{key}={value}" for key, value in pairs]
    try:
        cfg.validate(cfg.apply_overrides(cfg.TrainConfig(), assignments))
    except cfg.ConfigError as error:
        assert "\n" not in str(error).strip()


@given(st.dictionaries(KEYS, JSON_VALUES, max_size=5))
def test_any_saved_config_is_accepted_or_a_config_error(saved):
    """A damaged or hand-edited config.json (what --resume reads) fails as ConfigError."""
    try:
        cfg.validate(cfg.config_from_dict(saved))
    except cfg.ConfigError:
        pass


IMAGE_PREFIXES = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"GIF89a",
                  b"RIFF\x00\x00\x00\x00WEBPVP8 "]


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(IMAGE_PREFIXES), st.binary(max_size=512))
def test_random_bytes_are_an_image_or_a_one_line_error(tmp_path, prefix, body):
    path = tmp_path / "upload.png"
    path.write_bytes(prefix + body)
    try:
        pixels, description = predict.read_image(path)
    except predict.ImageError as error:
        assert str(error).startswith(f"{path}: ") and "\n" not in str(error)
    else:
        assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3


WRITABLE_FORMATS = ["PNG", "JPEG", "BMP", "GIF"] + (["WEBP"] if features.check("webp") else [])


@st.composite
def image_files(draw):
    """(encoded image bytes, format): random pixels, sizes, modes and formats."""
    mode = draw(st.sampled_from(["RGB", "RGBA", "L", "P"]))
    image_format = draw(st.sampled_from(WRITABLE_FORMATS))
    height, width = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    channels = {"RGB": 3, "RGBA": 4}.get(mode)
    shape = (height, width, channels) if channels else (height, width)
    image = Image.fromarray(draw(hnp.arrays(np.uint8, shape)))  # RGB, RGBA or L
    image = image.convert("P") if mode == "P" else image
    if image_format == "JPEG" and mode in ("RGBA", "P"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue(), image_format


@pytest.fixture(scope="module")
def reference_model(reference_run):
    from kerasvit.runs import loading

    return loading.load_model(reference_run)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(image_files())
def test_random_images_get_a_prediction(reference_model, tmp_path, image_file):
    encoded, image_format = image_file
    path = tmp_path / f"image.{image_format.lower()}"
    path.write_bytes(encoded)
    pixels, _ = predict.read_image(path)
    probabilities = predict.predict_probabilities(reference_model, [pixels])
    assert probabilities.shape == (1, 10) and np.all(np.isfinite(probabilities))
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)


def test_unknown_keys_never_pass_silently():
    with pytest.raises(cfg.ConfigError, match="unknown config key"):
        cfg.apply_overrides(cfg.TrainConfig(), ["learningrate=0.1"])
