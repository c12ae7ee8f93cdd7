"""Data-parallel training over every device of one or many hosts, through keras.distribution.

    KERAS_BACKEND=jax python -m kerasvit.train --model cnn --distribute data_parallel
    # each host (process I of N), the same command plus:
    #   --coordinator HOST0:PORT --num-processes N --process-id I

`--batch-size` is the global batch. Keras' `DataParallel` replicates the variables on every
device and splits each batch along its first axis; gradients and BatchNorm statistics are
computed over the whole global batch (JAX compiles one program for all devices), so a run on
4 devices follows the same loss curve as on 1. On several hosts, `keras.distribution.initialize`
(`jax.distributed.initialize` underneath) joins the processes, and Keras hands each process
its slice of every tf.data batch. Keras' distribution API runs on JAX only.

The checks that need no keras (`check_request`) run before the slow imports; `setup` runs
after `import keras` and before the model is built, so its variables are created replicated.
"""

import dataclasses
import datetime
import os
from pathlib import Path

from kerasvit.errors import UserError

MODES = ("none", "data_parallel")
# Keras' own variable names for the multi-host settings (see keras.distribution.initialize).
ENV_COORDINATOR = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
ENV_NUM_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
ENV_PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"


class DistributionError(UserError, RuntimeError):
    """Distributed training cannot run as asked; the message is shown as one line."""


@dataclasses.dataclass(frozen=True)
class Hosts:
    """Where this process sits in a multi-host run."""

    coordinator: str  # HOST:PORT of process 0
    num_processes: int
    process_id: int


def add_flags(parser):
    parser.add_argument("--distribute", choices=MODES,
                        help="data_parallel: split each batch over all devices (JAX only)")
    parser.add_argument("--coordinator", metavar="HOST:PORT",
                        help=f"multi-host: address of process 0 (or ${ENV_COORDINATOR})")
    parser.add_argument("--num-processes", type=int, metavar="N",
                        help=f"multi-host: number of processes (or ${ENV_NUM_PROCESSES})")
    parser.add_argument("--process-id", type=int, metavar="I",
                        help=f"multi-host: this process, 0..N-1 (or ${ENV_PROCESS_ID})")


def hosts_from(args, environ=os.environ):
    """The multi-host settings from flags (else Keras' environment variables), or None."""
    coordinator = args.coordinator or environ.get(ENV_COORDINATOR)
    num_processes = first_set(args.num_processes, environ.get(ENV_NUM_PROCESSES))
    process_id = first_set(args.process_id, environ.get(ENV_PROCESS_ID))
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if not any(given):
        return None
    if not all(given):
        raise DistributionError(
            "a multi-host run needs all of --coordinator HOST:PORT, --num-processes N and "
            "--process-id I (or their KERAS_DISTRIBUTION_* variables)")
    num_processes = as_int("--num-processes", num_processes)
    process_id = as_int("--process-id", process_id)
    check_coordinator(coordinator)
    if num_processes < 1:
        raise DistributionError(f"--num-processes must be at least 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise DistributionError(
            f"--process-id must be in 0..{num_processes - 1} for --num-processes "
            f"{num_processes}, got {process_id}")
    return Hosts(coordinator, num_processes, process_id)


def first_set(flag_value, env_value):
    return flag_value if flag_value is not None else env_value


def as_int(name, value):
    try:
        return int(value)
    except ValueError:
        raise DistributionError(f"{name} must be an integer, got {value!r}") from None


def check_coordinator(address):
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise DistributionError(
            f"--coordinator must be HOST:PORT (process 0's address), got {address!r}")


def check_request(distribute, backend, hosts):
    """Refuses what cannot work, before keras is imported."""
    if distribute == "none":
        if hosts is not None:
            raise DistributionError(
                "--coordinator/--num-processes/--process-id need --distribute data_parallel")
        return
    if backend != "jax":
        # tf.distribute and torch DDP would each need their own training loop plumbing;
        # Keras' distribution API gives data parallelism on JAX without any.
        raise DistributionError(
            f"--distribute {distribute} needs KERAS_BACKEND=jax (Keras' distribution API runs "
            f"on JAX only; this is {backend}); run: KERAS_BACKEND=jax python -m kerasvit.train "
            f"... --distribute {distribute}")


def suffix_for(hosts):
    """Processes other than 0 write their own run folder beside process 0's: on a shared
    file system the folders must not collide, and each keeps its own log."""
    if hosts is None or hosts.process_id == 0:
        return ""
    return f"-process{hosts.process_id}"


def path_for_process(path, hosts):
    return f"{path}{suffix_for(hosts)}" if path else path


def default_run_dir(model_name, backend, hosts, root):
    """None (the usual name) for process 0; `<model>-<backend>-<time>-process<I>` for others."""
    if not suffix_for(hosts):
        return None
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return str(Path(root) / f"{model_name}-{backend}-{stamp}{suffix_for(hosts)}")


def setup(distribute, batch_size, hosts):
    """Joins the other hosts and makes `DataParallel` the global distribution. Call after
    the random seed is set (Keras then skips its cross-host seed exchange) and before the
    model is built. Returns the record for env.json."""
    if distribute == "none":
        return {"mode": "none"}
    import keras

    if hosts is not None:
        join_hosts(keras, hosts)
    devices = keras.distribution.list_devices()
    check_batch_size(batch_size, len(devices))
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    record = describe(len(devices), batch_size, hosts)
    print(f"data parallel: global batch {batch_size} = {record['per_device_batch']} on each of "
          f"{record['num_devices']} devices ({record['num_processes']} process"
          f"{'es' if record['num_processes'] > 1 else ''})")
    return record


def spans_processes():
    """True in a multi-process (multi-host) JAX run, whose outputs span devices that no one
    process can read back whole (predict() on them fails)."""
    import keras

    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.process_count() > 1


def join_hosts(keras, hosts):
    try:
        keras.distribution.initialize(hosts.coordinator, hosts.num_processes, hosts.process_id)
    except Exception as error:  # XLA raises its own runtime errors; all mean "cannot join".
        raise DistributionError(
            f"process {hosts.process_id} of {hosts.num_processes} could not join the "
            f"coordinator at {hosts.coordinator} ({type(error).__name__}: "
            f"{(str(error).splitlines() or [''])[0]}); check that process 0 runs with the "
            f"same --coordinator and --num-processes and that its port is reachable") from None


def check_batch_size(batch_size, num_devices):
    """Each device takes an equal slice of the global batch."""
    if batch_size % num_devices == 0:
        return
    below = batch_size // num_devices * num_devices
    options = [n for n in (below, below + num_devices) if n > 0]
    choices = " or ".join(f"--batch-size {n}" for n in options)
    raise DistributionError(
        f"batch_size {batch_size} does not split evenly over {num_devices} devices; use a "
        f"multiple of {num_devices}, e.g. {choices}")


def describe(num_devices, batch_size, hosts):
    return {
        "mode": "data_parallel",
        "num_devices": num_devices,
        "num_processes": hosts.num_processes if hosts else 1,
        "process_id": hosts.process_id if hosts else 0,
        "per_device_batch": batch_size // num_devices,
    }


def evaluation_batch_multiple(batch_size):
    """What every evaluation batch, the last one included, must be a multiple of under the
    active distribution (see `kerasvit.data.stream.evaluation_dataset(batch_multiple=...)`)."""
    import keras

    distribution = keras.distribution.distribution()
    if distribution is None:
        return 1
    if distribution.num_processes > 1:
        # Keras re-batches each global batch into per-process slices and deals them out in
        # turn: a short last batch makes one slice, so only one process would get it and the
        # others would wait for it forever. Evaluate whole batches only.
        return batch_size
    return int(distribution.device_mesh.devices.size)


def images_left_out(num_images, batch_size, multiple):
    """How many images `evaluation_dataset(..., batch_multiple=multiple)` leaves out."""
    return (num_images % batch_size) % multiple


def evaluation_note(splits, batch_size):
    """One line naming the validation/test images that distributed evaluation leaves out,
    or None when every image is used."""
    multiple = evaluation_batch_multiple(batch_size)
    parts = []
    for split in ("validation", "test"):
        total = len(splits[split][0])
        left = images_left_out(total, batch_size, multiple)
        if left:
            parts.append(f"{left} of {total} {split} images")
    if not parts:
        return None
    return (f"note: {' and '.join(parts)} are left out of evaluation so that every batch "
            f"splits evenly over the devices and processes")
