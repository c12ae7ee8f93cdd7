"""Run the same training job on TensorFlow, JAX and PyTorch and measure them side by side
(`python -m kerasvit.compare_backends`: kerasvit.cli.compare_backends).

Each backend runs in its own process (the backend is fixed at `import keras`), one after
the other so that they never compete for the machine; then one more process per backend
loads every backend's saved model and checks that it predicts the same. Results go to
runs/compare-<model>-<time>/: results.json, results.csv, results.md, compare.png.
This process never imports keras: it only orchestrates and reports.
"""

import datetime
import importlib.util
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from kerasvit.compare import backend_report
from kerasvit.errors import UserError
from kerasvit.runs import environment, folders

PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the folder holding kerasvit/
# The module each backend needs; if it cannot be found the backend is "not installed".
BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def run_all_training(backends, config, seeds, test_images, probe_images, out_dir):
    results = {}
    for position, backend in enumerate(backends, start=1):
        print(f"[{position}/{len(backends)}] {backend}: training ...", end=" ", flush=True)
        results[backend] = run_training(backend, config, seeds, test_images, probe_images,
                                        out_dir)
        print(backend_report.progress_line(results[backend]), flush=True)
        if results[backend].get("user_error"):  # Would fail the same way on every backend.
            raise UserError(results[backend]["error"])
    return results


def run_training(backend, config, seeds, test_images, probe_images, out_dir):
    """Trains on one backend in a child process; returns its result dict (never raises)."""
    if not backend_installed(backend):
        return {"status": "not installed",
                "error": f"ModuleNotFoundError: No module named '{BACKEND_MODULES[backend]}'"}
    work_dir = out_dir / "backends" / backend
    work_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "config": config.to_dict(),
        "seeds": seeds,
        "test_images": test_images,
        "probe_images": probe_images,
        "model_dir": str(work_dir.resolve()),
        "result_path": str((work_dir / "result.json").resolve()),
        # Import time is counted from here, so it includes starting Python.
        "spawn_time": time.time(),
    }
    return run_worker("train", backend, spec, work_dir)


def backend_installed(backend):
    return importlib.util.find_spec(BACKEND_MODULES[backend]) is not None


def run_load_checks(results, out_dir):
    """One process per working backend loads every saved model: {saved_by: {loaded_in: ...}}."""
    model_dirs = {backend: str((out_dir / "backends" / backend).resolve())
                  for backend, result in results.items() if result["status"] == "ok"}
    checks = {saved_by: {} for saved_by in model_dirs}
    for loaded_in in model_dirs:
        print(f"load check in {loaded_in}: ...", end=" ", flush=True)
        work_dir = out_dir / "backends" / loaded_in
        spec = {"model_dirs": model_dirs,
                "result_path": str((work_dir / "check.json").resolve())}
        result = run_worker("check", loaded_in, spec, work_dir)
        for saved_by in model_dirs:
            checks[saved_by][loaded_in] = result.get("loaded", {}).get(
                saved_by, {"error": result.get("error", "check process failed")})
        print(backend_report.check_progress_line(result), flush=True)
    return checks


def run_worker(mode, backend, spec, work_dir):
    """Runs `kerasvit.compare.worker` with its output in a log file, not on the screen."""
    spec_path = work_dir / f"{mode}-spec.json"
    result_path = Path(spec["result_path"])
    folders.write_json(spec_path, spec)
    log_path = work_dir / f"{mode}.log"
    started, cpu_before = time.perf_counter(), cpu_snapshot()
    with open(log_path, "w") as log:
        completed = subprocess.run(
            worker_command(mode, spec_path), env=worker_env(backend),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    wall_s = time.perf_counter() - started
    other_load = other_cpu_share(cpu_before, cpu_snapshot(), wall_s)
    if result_path.is_file():
        result = folders.read_json(result_path)
    else:  # Killed or crashed before it could write a result.
        result = {"status": "failed",
                  "error": last_error_line(log_path) or f"worker exited with code {completed.returncode}"}
    if result.get("status") == "ok" and completed.returncode != 0:
        result = {"status": "failed", "error": f"worker exited with code {completed.returncode}"}
    result["wall_s"] = wall_s
    result["other_cpu_load"] = other_load
    result["log"] = str(log_path)
    return result


def cpu_snapshot():
    """(CPU seconds the whole machine has been busy, CPU seconds used by our finished children)."""
    import psutil

    times = psutil.cpu_times()
    busy = sum(getattr(times, name, 0.0)
               for name in ("user", "nice", "system", "irq", "softirq", "steal"))
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return busy, children.ru_utime + children.ru_stime


def other_cpu_share(before, after, wall_s):
    """Share of the machine's CPU that other processes used while a worker ran: timings
    taken on a busy machine are not worth comparing (torch's threads suffer most)."""
    others = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, others) / (max(wall_s, 1e-9) * (os.cpu_count() or 1))


def worker_command(mode, spec_path):
    return [sys.executable, "-m", "kerasvit.compare.worker", mode, str(spec_path)]


def worker_env(backend):
    env = dict(os.environ, KERAS_BACKEND=backend)
    # The worker must import this same kerasvit, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_PARENT), env.get("PYTHONPATH")) if p)
    return env


ERROR_PATTERN = re.compile(r"^\w[\w.]*(Error|Exception|Exit|Interrupt)\b.*")


def last_error_line(log_path):
    """The last `SomethingError: ...` line of a log, else its last non-empty line."""
    try:
        lines = [line.strip() for line in Path(log_path).read_text(errors="replace").splitlines()]
    except OSError:
        return None
    lines = [line for line in lines if line]
    errors = [line for line in lines if ERROR_PATTERN.match(line)]
    chosen = errors[-1] if errors else (lines[-1] if lines else None)
    return chosen[:300] if chosen else None


def build_report(config, seeds, backends, results, load_checks, command):
    return {
        "model": config.model,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "config": config.to_dict(),
        "seeds": seeds,
        "backends": backends,
        "machine": backend_report.machine_info(),
        "versions": environment.package_versions(),
        "method": backend_report.METHOD,
        "results": {backend: backend_report.summarise(results[backend], config.batch_size,
                                                      load_checks.get(backend))
                    for backend in backends},
        "load_check": load_checks,
    }

