"""What made a run (env.json): backend, package versions, devices, CPU and its bf16
instructions, the git commit."""

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

VERSIONED_PACKAGES = ("keras", "keras-hub", "tensorflow", "tensorflow-datasets", "jax",
                      "jaxlib", "torch", "numpy")


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


def cpu_flags():
    """The CPU's instruction-set flags (Linux), or None where they cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def cpu_has_bf16_instructions():
    """True/False where /proc/cpuinfo tells, None elsewhere. Without AVX-512 BF16 or AMX,
    bf16 matrix products are emulated: measured 10x slower than float32 here (bench/)."""
    flags = cpu_flags()
    if flags is None:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16"})


PACKAGE_DIR = Path(__file__).resolve().parents[1]


def git(*args, checkout=PACKAGE_DIR):
    """The output of a git command in `checkout` (kerasvit's), or None (no git, not a
    checkout)."""
    try:
        result = subprocess.run(["git", *args], capture_output=True, text=True, cwd=checkout,
                                timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def git_commit():
    return (git("rev-parse", "--short", "HEAD") or "").strip() or None


def git_tree_dirty(checkout=PACKAGE_DIR):
    """True when kerasvit's checkout has uncommitted changes to tracked files: the run's
    code is then not exactly `kerasvit_commit`."""
    status = git("status", "--porcelain", "--untracked-files=no", checkout=checkout)
    return None if status is None else bool(status.strip())


def list_devices():
    """keras' device names ("cpu:0", "gpu:0", ...) for the current backend."""
    import keras

    if keras.backend.backend() == "torch":
        from kerasvit import backend_ops

        return backend_ops.torch_devices()
    try:
        return [str(d) for d in keras.distribution.list_devices()]
    except Exception:  # Not every backend implements device listing in every version.
        return ["cpu:0"]


def device_kind(devices=None):
    """"gpu" when the backend sees a GPU (CUDA), else "cpu"."""
    devices = list_devices() if devices is None else devices
    return "gpu" if any("gpu" in str(d).lower() or "cuda" in str(d).lower()
                        for d in devices) else "cpu"


def collect_env(backend):
    """What made this run: backend, versions, devices, machine (env.json)."""
    devices = list_devices()
    return {
        "backend": backend,
        "versions": package_versions(),
        "python": platform.python_version(),
        "devices": [str(d) for d in devices],
        "num_devices": len(devices),
        "device_kind": device_kind(devices),
        "cpu": cpu_model(),
        "cpu_bf16_instructions": cpu_has_bf16_instructions(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "kerasvit_commit": git_commit(),
        "kerasvit_tree_dirty": git_tree_dirty(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }
