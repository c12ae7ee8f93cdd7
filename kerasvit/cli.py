"""What every entry point shares: one-line errors with exit code 2, and the backend check
that must run before the first `import keras`."""

import argparse
import os
import sys

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
