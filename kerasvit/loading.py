"""Loading trained models and run folders, whatever backend wrote them.

A `.keras` file records the classes it needs; ours are registered when `kerasvit.models`
layers are imported, keras-hub's when `keras_hub` is. Loading is always in Keras safe
mode (no arbitrary code from Lambda layers), and without the optimizer: a file saved under
torch records a torch-only optimizer that fails on other backends.
"""

import json
import warnings
import zipfile
from pathlib import Path

from kerasvit.errors import UserError


class LoadError(UserError, RuntimeError):
    """The model or run cannot be loaded; the message is shown to the user as one line."""


def resolve_model_path(path):
    """A run folder or a `.keras` file -> (model path, run folder or None)."""
    path = Path(path)
    if path.is_dir():
        model_path = path / "model.keras"
        if not model_path.is_file():
            raise LoadError(f"{path} has no model.keras; is it a finished kerasvit run folder?")
        return model_path, path
    if not path.exists():
        raise LoadError(f"{path} does not exist; pass a run folder or a .keras file")
    if path.suffix != ".keras":
        raise LoadError(f"{path} is not a .keras file; pass a run folder or a .keras file")
    run_dir = path.parent if (path.parent / "config.json").is_file() else None
    return path, run_dir


def saved_config(model_path):
    """The model config stored inside a `.keras` archive, as a dict."""
    try:
        with zipfile.ZipFile(model_path) as archive:
            return json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError):
        raise LoadError(f"{model_path} is not a valid .keras file (corrupted, truncated or "
                        "written by another program)") from None


def load_model(path, safe_mode=True):
    """Loads a `.keras` file (or a run folder's model.keras) for inference on this backend."""
    model_path, _ = resolve_model_path(path)
    archive_config = saved_config(model_path)
    import keras

    import kerasvit.models.vit_layers  # noqa: F401  (registers the custom layers)

    if "keras_hub" in json.dumps(archive_config):
        import keras_hub  # noqa: F401  (registers keras-hub's classes)
    try:
        with warnings.catch_warnings():
            # keras-hub tasks compile themselves when rebuilt, so Keras warns that the saved
            # optimizer state does not fit; we load for inference and never use it.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            return keras.models.load_model(model_path, compile=False, safe_mode=safe_mode)
    except Exception as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise LoadError(f"cannot load {model_path}: {message[:200]}") from None


def read_run_file(run_dir, name):
    """A JSON file of a run folder (config.json, env.json, metrics.json) as a dict, or None
    when there is no run folder or no such file."""
    if run_dir is None or not (Path(run_dir) / name).is_file():
        return None
    path = Path(run_dir) / name
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        raise LoadError(f"{path} is not valid JSON; fix or remove it") from None


def load_run(path):
    """Returns (model, run config dict or None, run folder or None)."""
    model_path, run_dir = resolve_model_path(path)
    config = read_run_file(run_dir, "config.json")
    return load_model(model_path), config, run_dir


def model_name(model, config=None):
    """The registry name of a loaded model ("cnn", "vit" or "vit_b16")."""
    if config and "model" in config:
        return config["model"]
    if type(model).__name__ == "ViTImageClassifier":
        return "vit_b16"
    return model.name
