"""What every entry point shares: one-line errors with exit code 2, and the backend check
that must run before the first `import keras`."""

import argparse
import contextlib
import os
import sys
import tempfile

BACKENDS = ("tensorflow", "jax", "torch")


def fail(prog, message, code=2):
    """Prints `prog: error: message` as one line on stderr and exits (no traceback)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag gives one line (with a pointer to --help), not the usage dump."""

    def error(self, message):
        fail(self.prog, f"{message} (see --help)")


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
        import tensorflow as tf

        absl.logging.set_verbosity(absl.logging.ERROR)  # tfds' INFO/WARNING chatter

        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            pass  # Devices already initialised by an earlier import: nothing to change.
