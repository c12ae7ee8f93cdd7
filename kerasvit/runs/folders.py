"""Run folders: new names that never overwrite, atomic writes (a kill leaves the old file
or the new one, never half of one), clear errors for a full or read-only disk, and the
history.csv clean-up that --resume needs."""

import csv
import datetime
import errno
import json
import os
import re
import shutil
import time
from pathlib import Path

from kerasvit.errors import UserError

try:
    import resource  # Unix only
except ImportError:
    resource = None

RUNS_ROOT = Path("runs")
# Fault injection for the kill/resume tests: the process stops at the named point (see
# pause_point) and waits there to be killed.
PAUSE_VARIABLE = "KERASVIT_PAUSE_AT"
# Errors that mean "this location cannot take the file", not a bug: full disk or quota,
# a file-size limit, a read-only file system, missing permission.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


class RunDirError(UserError, RuntimeError):
    """The run folder cannot be used as asked; the message is shown as one line."""


class WriteError(UserError, OSError):
    """A file could not be written (disk full, read-only, no permission); shown as one line."""


def is_write_error(error):
    """True for an OSError with one of WRITE_ERRNOS, also when a C library (HDF5 under
    h5py) reports the errno only inside its message."""
    if not isinstance(error, (OSError, RuntimeError)):
        return False
    code = getattr(error, "errno", None)
    if code is None:
        found = re.search(r"errno = (\d+)", str(error))
        code = int(found.group(1)) if found else None
    return code in WRITE_ERRNOS


def write_error(path, error):
    """The WriteError for a failed write of `path`; `error` is what the writer raised."""
    code = getattr(error, "errno", None)
    if code is None:
        found = re.search(r"errno = (\d+)", str(error))
        code = int(found.group(1)) if found else None
    reason = os.strerror(code) if code else type(error).__name__
    return WriteError(f"cannot write {path} ({reason})")


def check_room(path, size):
    """Refuses to start writing `size` bytes to `path` when the disk (or this process's
    file-size limit) cannot take them. Needed where a C library writes the file: HDF5,
    under Keras' save_weights, crashes the process on a full disk instead of raising."""
    reason = None
    if size > shutil.disk_usage(Path(path).parent).free:
        reason = errno.ENOSPC
    elif resource is not None:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and size > limit:
            reason = errno.EFBIG
    if reason is not None:
        raise write_error(path, OSError(reason, os.strerror(reason)))


def check_can_create(path, flag="--run-dir"):
    """Refuses, before anything is written, an output folder that cannot be created or
    written: its nearest existing ancestor must be a folder this process may write into."""
    path = Path(path).absolute()
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RunDirError(f"cannot create {path}: {ancestor} is a file, not a folder; "
                          f"choose another {flag}")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot write to {path}: {ancestor} is read-only or not writable "
                          f"by this user; choose a writable {flag}")


def pause_point(name):
    """Test hook: when $KERASVIT_PAUSE_AT names this point, says so on stdout and waits to be
    killed. The kill/resume tests stop the run at exact moments (mid-epoch, between writing
    and renaming a file) this way, instead of guessing with sleeps."""
    if os.environ.get(PAUSE_VARIABLE) != name:
        return
    print(f"kerasvit: paused at {name} ({PAUSE_VARIABLE})", flush=True)
    while True:
        time.sleep(3600)  # Interruptible: SIGINT/SIGTERM handlers still run.


def refuse_existing_run_dir(run_dir):
    """A run folder is never overwritten: an existing --run-dir is refused."""
    if run_dir and Path(run_dir).exists():
        raise UserError(
            f"run folder {run_dir} already exists; choose another --run-dir, or pass "
            f"--resume {run_dir} to continue it"
        )


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


def partial_path(path):
    """Where `path` is written before it is renamed into place: a hidden sibling, so a kill
    mid-write leaves the old file (or none) under the real name, never a torn one."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


def commit(temporary, path):
    """Renames a fully written `temporary` to `path`, on disk before and after the rename
    (fsync), so that even a power cut leaves the old file or the new one."""
    with open(temporary, "rb") as f:
        os.fsync(f.fileno())
    os.replace(temporary, path)
    try:
        directory = os.open(Path(path).parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError:
        pass  # Some file systems cannot sync a folder; the rename itself has happened.


def write_atomically(path, write, name=None, temporary=None):
    """Calls `write(temporary)`, then commits the file to `path`. A failed write removes the
    partial file; a full disk or read-only folder becomes a WriteError. `name` is the pause
    point between writing and renaming (tests)."""
    path = Path(path)
    temporary = Path(temporary or partial_path(path))
    try:
        write(temporary)
        if name:
            pause_point(name)
        commit(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if is_write_error(error):
            raise write_error(path, error) from None
        raise


def write_json(path, data, name=None):
    """Writes JSON atomically: a crash mid-write never leaves a truncated file."""
    text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
    write_atomically(path, lambda temporary: Path(temporary).write_text(text), name)


def read_json(path):
    return json.loads(Path(path).read_text())


def save_model(model, path, name=None):
    """Saves a `.keras` file atomically (written beside it, then renamed into place), in
    channels_last, the layout every backend's CPU convolutions run (kerasvit.models.layouts)."""
    from kerasvit.models import layouts

    model = layouts.to_data_format(model, "channels_last")
    path = Path(path)
    # Keras insists on the .keras suffix for the file it writes.
    temporary = path.with_name(f".{path.stem}.partial.keras")
    write_atomically(path, model.save, name, temporary)


def remove_partial_files(run_dir):
    """Deletes what a killed process left half-written (never the files themselves)."""
    for leftover in Path(run_dir).glob(".*.partial*"):
        leftover.unlink(missing_ok=True)


def truncate_history(path, epochs):
    """Keeps the rows of the first `epochs` epochs of a CSVLogger file, in order, one each:
    a resumed run recomputes the later ones, and a row torn by a kill is dropped."""
    path = Path(path)
    if not path.exists():
        return
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fieldnames, rows = reader.fieldnames, list(reader)
    kept = {}
    for row in rows:
        epoch = row.get("epoch") or ""
        if epoch.isdigit() and int(epoch) < epochs and None not in row.values():
            kept[int(epoch)] = row
    if not kept:
        path.unlink()  # CSVLogger writes a fresh header
        return

    def write(temporary):
        with open(temporary, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames)
            writer.writeheader()
            for epoch in sorted(kept):
                writer.writerow(kept[epoch])

    write_atomically(path, write)


def history_epochs(path):
    """The epoch numbers of a CSVLogger file, in file order."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]
