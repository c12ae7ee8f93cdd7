"""The table of bad input (issue 9): every row runs a CLI in a subprocess and must end with
exit code 2 and exactly one stderr line naming the problem and the fix, with no traceback and
nothing written or changed. Add a row for every new way to fail."""

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest
from cli_helpers import (
    TINY_TRAIN_FLAGS,
    TINY_TRAIN_FLAGS_WITHOUT_EPOCHS,
    cli_env,
    history_rows,
    png_bytes,
    png_claiming,
    run_cli,
)

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def free_port():
    """A local port with nothing listening on it: a proxy there refuses every connection."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


DEAD_PROXY = f"http://127.0.0.1:{free_port()}"


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
    BadInput("pretrained-missing-preset-folder", "train",
             ("--model", "pretrained", "--preset", "{tmp}/no-preset"),
             "preset folder {tmp}/no-preset does not exist", "pass a folder made with save_to_preset"),
    BadInput("test-per-class-larger-than-data", "train", ("--test-per-class", "1001"),
             "test_per_class 1001 is larger than the 1000", "use at most 1000"),
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


# The cheap rows are refused before any framework is imported (no_frameworks proves it), so
# what they do cannot depend on the backend: they run in one pass of the suite, not three.
CHEAP_ROWS_BACKEND = "tensorflow"


@pytest.mark.parametrize("row", cheap_rows())
def test_bad_input_gets_one_line_and_writes_nothing(row, tmp_path, request, no_frameworks,
                                                    backend):
    if backend != CHEAP_ROWS_BACKEND:
        pytest.skip(f"refused before any framework loads: run once, in the {CHEAP_ROWS_BACKEND} pass")
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


