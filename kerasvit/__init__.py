"""kerasvit: train, compare and explain CIFAR-10 classifiers with Keras 3 on any backend.

Importing the package does not import keras: the backend is chosen by `KERAS_BACKEND`
before the first `import keras`, and entry points check it first (`kerasvit.cli.check_backend`).
Our custom layers are still registered for a plain `keras.saving.load_model` in a user's
script: right away if keras is already imported, else as soon as keras finishes importing.
"""

import importlib.abc
import importlib.util
import os
import sys

__version__ = "0.1.0"

CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

VALID_BACKENDS = ("tensorflow", "jax", "torch")


def register_layers():
    """Registers kerasvit's custom layers, initializers, optimizer and schedule with keras
    (importing their modules does it), so that any `.keras` file of ours loads."""
    import kerasvit.models.cnn_layers  # noqa: F401
    import kerasvit.models.vit_layers  # noqa: F401
    import kerasvit.training.optimizers  # noqa: F401


class _RegisterLayersAfterKeras(importlib.abc.MetaPathFinder):
    """Waits for `import keras` and registers our layers right after it. Importing keras
    here instead would cost seconds on every `--help` and before every bad-flag message,
    and would fix the backend before the entry points check KERAS_BACKEND."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)  # One shot; also keeps the lookup below from recursing.
        spec = importlib.util.find_spec("keras")
        if spec is None or spec.loader is None:
            return spec
        execute_keras = spec.loader.exec_module

        def execute_then_register(module):
            execute_keras(module)
            register_layers()

        spec.loader.exec_module = execute_then_register
        return spec


def _register_layers_with_keras():
    # An invalid KERAS_BACKEND makes `import keras` raise; leave it to the entry points'
    # one-line message (kerasvit.cli.check_backend) rather than failing `import kerasvit`.
    if os.environ.get("KERAS_BACKEND", "tensorflow") not in VALID_BACKENDS:
        return
    if "keras" in sys.modules:
        register_layers()
    elif not any(isinstance(finder, _RegisterLayersAfterKeras) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterLayersAfterKeras())


_register_layers_with_keras()
