"""Data-parallel training (`--distribute data_parallel`): input checks on every backend; on
JAX, real training on 1 vs 4 simulated CPU devices and on 2 processes joined over loopback.

The device count is fixed by XLA_FLAGS before JAX starts, so the JAX runs are subprocesses of
`python -m kerasvit.train`; they run once, in the KERAS_BACKEND=jax pass of the suite."""

import csv
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import train_error_line
from PIL import Image

from kerasvit import distribution
from kerasvit.cli import train
from kerasvit.data import stream

# One step per epoch, so history.csv holds a per-step loss curve. No augmentation: tf.data
# draws its random crops/flips in a parallel map, so they differ from run to run even on one
# device (measured: first-step losses 5.59 vs 5.67 with it), which would hide what we test.
# The test loss comes from the first 256 test images (16 whole batches, so no process is left
# waiting for a short last batch): the full 10k, 625 cross-process steps, took minutes.
TINY = ["--model", "cnn", "--subset-per-class", "8", "--batch-size", "16", "--epochs", "4",
        "--set", "steps_per_epoch=1", "--set", "validation_size=80", "--set", "augmentation=none",
        "--set", "test_images=256",
        "--set", "model_args.widths=[8, 16, 32]"]
RUN_FILES = ("config.json", "env.json", "history.csv", "model.keras", "metrics.json")
# Largest |difference| allowed between the 1-device and the distributed loss curves. The runs
# differ only in the order float32 sums are reduced across devices (measured max over 4
# training losses, 4 validation losses and the test loss: 4.8e-7 on 4 devices, 9.5e-7 on
# 2 processes x 2 devices); a real sharding bug (a per-device batch norm, a gradient not
# averaged, a batch dealt twice) moves the losses by 1e-2 or more.
LOSS_TOLERANCE = 1e-4
TIMEOUT_S = 300

needs_jax = pytest.mark.skipif(os.environ.get("KERAS_BACKEND") != "jax",
                               reason="JAX subprocess runs happen once, in the jax pass")


# ---- input checks: every backend, in-process, before keras loads ----

@pytest.mark.parametrize("other_backend", ["tensorflow", "torch"])
def test_other_backends_say_data_parallel_needs_jax(tmp_path, monkeypatch, capsys, other_backend):
    monkeypatch.setenv("KERAS_BACKEND", other_backend)
    line = train_error_line(["--distribute", "data_parallel"], tmp_path, monkeypatch, capsys)
    assert line == (
        f"kerasvit.train: error: --distribute data_parallel needs KERAS_BACKEND=jax (Keras' "
        f"distribution API runs on JAX only; this is {other_backend}); run: KERAS_BACKEND=jax "
        f"python -m kerasvit.train ... --distribute data_parallel")


@pytest.mark.parametrize("argv, fragment", [
    (["--distribute", "model_parallel"], "invalid choice: 'model_parallel'"),
    (["--set", "distribute=pipeline"], "distribute must be one of none, data_parallel"),
    (["--num-processes", "2"], "a multi-host run needs all of --coordinator HOST:PORT"),
    (["--coordinator", "host0", "--num-processes", "2", "--process-id", "0"],
     "--coordinator must be HOST:PORT"),
    (["--coordinator", "host0:1234", "--num-processes", "2", "--process-id", "2"],
     "--process-id must be in 0..1"),
    (["--coordinator", "host0:1234", "--num-processes", "2", "--process-id", "0"],
     "need --distribute data_parallel"),
])
def test_bad_distribution_input_is_one_line(tmp_path, monkeypatch, capsys, argv, fragment):
    assert fragment in train_error_line(argv, tmp_path, monkeypatch, capsys)


def test_batch_size_must_split_over_the_devices():
    distribution.check_batch_size(16, 4)
    with pytest.raises(distribution.DistributionError, match="use a multiple of 4, e.g. "
                       "--batch-size 16 or --batch-size 20"):
        distribution.check_batch_size(18, 4)
    with pytest.raises(distribution.DistributionError, match=r"e\.g\. --batch-size 8$"):
        distribution.check_batch_size(3, 8)


def test_multi_host_settings_come_from_flags_or_keras_variables():
    flags = train.parse_args(["--coordinator", "10.0.0.1:1234", "--num-processes", "2",
                              "--process-id", "1"])
    hosts = distribution.Hosts("10.0.0.1:1234", 2, 1)
    assert distribution.hosts_from(flags, environ={}) == hosts
    environ = {distribution.ENV_COORDINATOR: "10.0.0.1:1234",
               distribution.ENV_NUM_PROCESSES: "2", distribution.ENV_PROCESS_ID: "1"}
    assert distribution.hosts_from(train.parse_args([]), environ) == hosts
    assert distribution.hosts_from(train.parse_args([]), environ={}) is None
    # Process 0 keeps the folder it was given; the others write beside it.
    assert distribution.path_for_process("runs/a", hosts) == "runs/a-process1"
    assert distribution.path_for_process("runs/a", distribution.Hosts("h:1", 2, 0)) == "runs/a"


def test_evaluation_batches_are_trimmed_to_a_multiple_of_the_devices():
    images, labels = np.zeros((10, 32, 32, 3), np.uint8), np.arange(10) % 10

    def batch_sizes(multiple):
        dataset = stream.evaluation_dataset(images, labels, image_size=(32, 32), batch_size=4,
                                            batch_multiple=multiple)
        return [int(x.shape[0]) for x, _ in dataset]

    assert batch_sizes(1) == [4, 4, 2]
    assert batch_sizes(2) == [4, 4, 2] and distribution.images_left_out(10, 4, 2) == 0
    assert batch_sizes(4) == [4, 4] and distribution.images_left_out(10, 4, 4) == 2


# ---- JAX: real runs through the CLI on simulated devices ----

def start_train(args, cwd, name, devices, extra_env=None):
    """Starts `python -m kerasvit.train` on JAX with `devices` simulated CPU devices.

    Each simulated device is a thread, and XLA aborts the process when one reaches a
    collective (the gradient all-reduce) more than 40 s after the others. Five runs at once
    on a busy 2-core CPU did starve one that long (seen once: SIGABRT, "Termination timeout
    for all reduce ... of 40 seconds exceeded"), so the limit is raised to the test's own."""
    xla_flags = (f"--xla_force_host_platform_device_count={devices} "
                 f"--xla_cpu_collective_call_terminate_timeout_seconds={TIMEOUT_S}")
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONUNBUFFERED="1", XLA_FLAGS=xla_flags,
               **(extra_env or {}))
    log = open(Path(cwd) / f"{name}.log", "w")  # A file, not a pipe: runs go in parallel.
    process = subprocess.Popen([sys.executable, "-m", "kerasvit.train", *args], cwd=cwd,
                               env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    process.log_path, process.name = log.name, name
    log.close()
    return process


def finish(process):
    try:
        process.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    output = Path(process.log_path).read_text()
    return process.returncode, output


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def jax_runs(tmp_path_factory):
    """Started at once: one run on 1 device, one data-parallel on 4, one refused batch size,
    and 2 processes x 2 devices joined over a loopback coordinator (JAX's gloo collectives
    on CPU), which must behave like 4 devices of one host."""
    cwd = tmp_path_factory.mktemp("distribution")
    hosts = ["--distribute", "data_parallel", "--coordinator", f"127.0.0.1:{free_port()}",
             "--num-processes", "2", "--run-dir", "runs/hosts"]
    processes = [
        start_train([*TINY, "--run-dir", "runs/one"], cwd, "one", devices=1),
        start_train([*TINY, "--distribute", "data_parallel", "--run-dir", "runs/four"], cwd,
                    "four", devices=4),
        start_train([*TINY, "--distribute", "data_parallel", "--batch-size", "18",
                     "--run-dir", "runs/odd"], cwd, "odd", devices=4),
        *(start_train([*TINY, *hosts, "--process-id", str(i)], cwd, f"host{i}", devices=2)
          for i in (0, 1)),
    ]
    return cwd, {process.name: finish(process) for process in processes}


def succeeded(jax_runs, *names):
    cwd, results = jax_runs
    for name in names:
        code, output = results[name]
        assert code == 0, f"{name} exited {code}:\n{output[-3000:]}"
    return cwd


def confusion_matrix_images(run_dir):
    """The PNG images logged under the TensorBoard tag `confusion_matrix` (validation)."""
    from tensorboard.backend.event_processing import event_accumulator

    events = event_accumulator.EventAccumulator(
        str(run_dir / "tensorboard" / "validation"),
        size_guidance={event_accumulator.TENSORS: 0})
    events.Reload()
    if "confusion_matrix" not in events.Tags()["tensors"]:
        return []
    # An image summary's tensor holds the strings [width, height, png].
    return [event.tensor_proto.string_val[2] for event in events.Tensors("confusion_matrix")]


def assert_complete(run_dir, log):
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    (png,) = confusion_matrix_images(run_dir)
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.width >= 400
    assert "confusion-matrix image not written" not in log


def losses(run_dir):
    """Per step (each epoch is one step): training loss before the update, validation loss
    after it; then the test loss."""
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    test_loss = json.loads((run_dir / "metrics.json").read_text())["test_loss"]
    return np.array([float(r["loss"]) for r in rows] + [float(r["val_loss"]) for r in rows]
                    + [test_loss])


@needs_jax
def test_same_loss_curve_on_1_and_4_devices(jax_runs):
    cwd = succeeded(jax_runs, "one", "four")
    one, four = losses(cwd / "runs/one"), losses(cwd / "runs/four")
    print(f"1 vs 4 devices, max |loss difference| = {np.abs(one - four).max():.2e}")
    assert len(one) == 9  # 4 training steps, 4 validations, 1 test evaluation
    np.testing.assert_allclose(four, one, rtol=0, atol=LOSS_TOLERANCE)


@needs_jax
def test_data_parallel_run_folder_is_complete(jax_runs):
    run_dir = succeeded(jax_runs, "four") / "runs/four"
    assert_complete(run_dir, jax_runs[1]["four"][1])
    env = json.loads((run_dir / "env.json").read_text())
    assert env["num_devices"] == 4 and env["devices"] == [f"cpu:{i}" for i in range(4)]
    assert env["distribution"] == {"mode": "data_parallel", "num_devices": 4,
                                   "num_processes": 1, "process_id": 0, "per_device_batch": 4}
    assert json.loads((run_dir / "config.json").read_text())["distribute"] == "data_parallel"
    assert "data parallel: global batch 16 = 4 on each of 4 devices" in jax_runs[1]["four"][1]


@needs_jax
def test_batch_size_not_divisible_by_devices_is_one_line_exit_2(jax_runs):
    cwd, results = jax_runs
    code, output = results["odd"]
    assert code == 2, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("kerasvit.train:")]
    assert errors == ["kerasvit.train: error: batch_size 18 does not split evenly over 4 "
                      "devices; use a multiple of 4, e.g. --batch-size 16 or --batch-size 20"]
    assert not (cwd / "runs/odd").exists()


@needs_jax
def test_two_processes_train_together_like_one_device(jax_runs):
    cwd = succeeded(jax_runs, "one", "host0", "host1")
    first, second = cwd / "runs/hosts", cwd / "runs/hosts-process1"
    for run_dir, process_id in ((first, 0), (second, 1)):
        env = json.loads((run_dir / "env.json").read_text())
        assert env["num_devices"] == 4
        assert env["distribution"] == {"mode": "data_parallel", "num_devices": 4,
                                       "num_processes": 2, "process_id": process_id,
                                       "per_device_batch": 4}
    one, hosts = losses(cwd / "runs/one"), losses(first)
    print(f"1 device vs 2 processes x 2 devices, max |loss difference| = "
          f"{np.abs(one - hosts).max():.2e}")
    np.testing.assert_allclose(hosts, one, rtol=0, atol=LOSS_TOLERANCE)
    np.testing.assert_allclose(losses(second), hosts, rtol=0, atol=1e-6)


@needs_jax
def test_two_process_run_folder_is_written_once_by_process_0(jax_runs):
    cwd = succeeded(jax_runs, "host0", "host1")
    # Process 0 owns the run folder, with the TensorBoard confusion-matrix image; process 1
    # keeps its log and copies beside it and writes nothing into process 0's folder.
    first = cwd / "runs/hosts"
    assert_complete(first, jax_runs[1]["host0"][1])
    assert json.loads((first / "env.json").read_text())["distribution"]["process_id"] == 0
    assert len(losses(first)) == 9  # One history row per epoch: a single writer.
    assert confusion_matrix_images(cwd / "runs/hosts-process1") == []
    assert "confusion-matrix image not written" not in jax_runs[1]["host1"][1]
    assert sorted(p.name for p in (cwd / "runs").iterdir()) == [
        "four", "hosts", "hosts-process1", "one"]
    assert "run folder: runs/hosts-process1" in jax_runs[1]["host1"][1]
