"""Run folders: unique names, atomic writes, and the environment record of every run."""

import csv
import datetime
import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

from kerasvit.errors import UserError

RUNS_ROOT = Path("runs")
VERSIONED_PACKAGES = ("keras", "keras-hub", "tensorflow", "tensorflow-datasets", "jax",
                      "jaxlib", "torch", "numpy")


class RunDirError(UserError, RuntimeError):
    """The run folder cannot be used as asked; the message is shown as one line."""


def new_run_dir(model_name, backend, run_dir=None, root=RUNS_ROOT):
    """Creates and returns a fresh run folder; an existing folder is never reused."""
    if run_dir:
        path = Path(run_dir)
        if path.exists():
            raise RunDirError(
                f"run folder {path} already exists; choose another --run-dir, or pass "
                f"--resume {path} to continue it"
            )
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path(root) / f"{model_name}-{backend}-{stamp}"
        suffix = 2
        while path.exists():  # Two runs started in the same second.
            path = Path(root) / f"{model_name}-{backend}-{stamp}-{suffix}"
            suffix += 1
    try:
        path.mkdir(parents=True, exist_ok=False)
    except OSError as error:
        raise RunDirError(f"cannot create run folder {path} ({error.strerror}); "
                          "choose a writable --run-dir") from None
    return path


def write_json(path, data):
    """Writes JSON atomically: a crash mid-write never leaves a truncated file."""
    path = Path(path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        json.dump(data, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
        temporary = f.name
    os.replace(temporary, path)


def read_json(path):
    return json.loads(Path(path).read_text())


def save_model(model, path):
    """Saves a `.keras` file atomically (written beside it, then renamed into place)."""
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.partial.keras")
    model.save(temporary)
    os.replace(temporary, path)


def deduplicate_history(path):
    """Keeps one row per epoch (the last) in a CSVLogger file; resuming after a crash
    between the CSV write and the backup would otherwise repeat an epoch."""
    path = Path(path)
    if not path.exists():
        return
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    by_epoch = {int(row["epoch"]): row for row in rows}
    fieldnames = list(rows[-1].keys())
    temporary = path.with_suffix(".tmp")
    with temporary.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        for epoch in sorted(by_epoch):
            writer.writerow(by_epoch[epoch])
    os.replace(temporary, path)


def package_versions():
    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit():
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            cwd=Path(__file__).parent, timeout=5,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def collect_env(backend):
    """What made this run: backend, versions, devices, machine (env.json)."""
    import keras

    try:
        devices = keras.distribution.list_devices()
    except Exception:  # Not every backend implements device listing in every version.
        devices = ["cpu:0"]
    return {
        "backend": backend,
        "versions": package_versions(),
        "python": platform.python_version(),
        "devices": [str(d) for d in devices],
        "num_devices": len(devices),
        "device_kind": "gpu" if any("gpu" in str(d).lower() or "cuda" in str(d).lower()
                                    for d in devices) else "cpu",
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "kerasvit_commit": git_commit(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }
