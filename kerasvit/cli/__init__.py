"""What every entry point shares: one-line errors with exit code 2, and the backend check
that must run before the first `import keras`."""

import argparse
import contextlib
import os
import shlex
import signal
import sys
import tempfile
import threading

BACKENDS = ("tensorflow", "jax", "torch")


def fail(prog, message, code=2):
    """Prints `prog: error: message` as one line on stderr and exits (no traceback)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag gives one line (with a pointer to --help), not the usage dump."""

    def error(self, message):
        fail(self.prog, f"{message} (see --help)")


def add_unsafe_load_flag(parser):
    parser.add_argument(
        "--unsafe-load", action="store_true",
        help="load a .keras file even if it holds Python code (Lambda layers), which runs "
             "on loading: only for files from a source you trust")


class Interrupted(KeyboardInterrupt):
    """SIGTERM raised as KeyboardInterrupt (Ctrl-C's exception), so both stop the same way;
    args[0] is the signal's name."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Inside the block SIGTERM raises Interrupted("SIGTERM") in the main thread, instead of
    ending the process on the spot."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Signal handlers can only be set from the main thread.
        return

    def handler(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupt_signal(interrupt):
    """The name of the signal behind a KeyboardInterrupt: SIGTERM (Interrupted) or SIGINT."""
    return interrupt.args[0] if isinstance(interrupt, Interrupted) and interrupt.args else "SIGINT"


def interrupt_exit_code(interrupt):
    """128 + the signal number, as a shell reports a process ended by that signal."""
    return 128 + signal.Signals[interrupt_signal(interrupt)].value


def shell_quote(path):
    return shlex.quote(str(path))


def check_backend(prog):
    """Returns the backend named by KERAS_BACKEND (default tensorflow), refusing unknown ones."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend not in BACKENDS:
        fail(prog, f"unknown backend KERAS_BACKEND={backend!r}; set it to one of {', '.join(BACKENDS)}")
    os.environ["KERAS_BACKEND"] = backend
    quiet_framework_logs()
    return backend


def quiet_framework_logs():
    # TensorFlow and XLA print pages of C++ info lines at import (CUDA probing, oneDNN);
    # users see only warnings and errors unless they set these themselves.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


@contextlib.contextmanager
def native_stderr_silenced():
    """Hides what C++ code writes straight to file descriptor 2 inside the block; replays it
    if the block fails, so real errors are never lost."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.buffer.write(captured.read())
            sys.stderr.flush()
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow_quietly():
    """Imports TensorFlow (the data pipeline and TensorBoard need it on every backend).

    Its CUDA probing prints lines such as "Could not find cuda drivers" before its own log
    level applies; on CPU machines they are noise around our one-line messages. TensorFlow
    is also kept off any GPU: it only feeds data, and must not take memory JAX/torch need."""
    with native_stderr_silenced():
        import absl.logging

        import kerasvit.data.tensorflow_cpu  # noqa: F401  (the import that hides the GPUs)

        absl.logging.set_verbosity(absl.logging.ERROR)  # tfds' INFO/WARNING chatter
