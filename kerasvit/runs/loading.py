"""Loading trained models and run folders, whatever backend wrote them.

A `.keras` file records the classes it needs; ours are registered when `kerasvit.models`
layers are imported, keras-hub's when `keras_hub` is. Loading is in Keras safe mode: a file
holding Python code (a Lambda layer's function, which would run on loading) is refused
unless the user passes --unsafe-load. Models load without the optimizer: a file saved under
torch records a torch-only optimizer that fails on other backends. A keras-hub classifier
saved before kerasvit made preset models one graph (its image converter outside the graph)
is rebuilt as that graph, with the same weights (kerasvit.models.preset_graph.upgrade).

The file is checked before keras is imported (`check_model_file`): a missing, truncated,
corrupted or foreign file, or one with code in it, is refused in a fraction of a second.
"""

import json
import warnings
import zipfile
import zlib
from pathlib import Path

from kerasvit.config import ConfigError, config_from_dict, validate
from kerasvit.errors import UserError

# What `model.save` puts in every .keras archive besides the weights (Keras 3).
KERAS_ARCHIVE_MEMBERS = ("config.json", "metadata.json")
UNSAFE_LOAD_HINT = ("it was refused because that code would run on loading; if you trust "
                    "where the file comes from, pass --unsafe-load")


class LoadError(UserError, RuntimeError):
    """The model or run cannot be loaded; the message is shown to the user as one line."""


class UnsafeModelError(LoadError):
    """The file holds Python code that safe mode will not run."""


def resolve_model_path(path):
    """A run folder or a `.keras` file -> (model path, run folder or None)."""
    path = Path(path)
    if path.is_dir():
        model_path = path / "model.keras"
        if not model_path.is_file():
            raise LoadError(f"{path} is a folder without model.keras; pass a finished kerasvit "
                            "run folder or a .keras file")
        return model_path, path
    if not path.exists():
        raise LoadError(f"{path} does not exist; pass a run folder or a .keras file")
    if path.suffix != ".keras":
        raise LoadError(f"{path} is not a .keras file; pass a run folder or a .keras file")
    run_dir = path.parent if (path.parent / "config.json").is_file() else None
    return path, run_dir


def read_archive_config(model_path):
    """The model config inside a `.keras` archive, after checking that the archive is whole
    (every member's checksum) and was written by Keras."""
    try:
        with zipfile.ZipFile(model_path) as archive:
            names = set(archive.namelist())
            damaged = first_damaged_member(archive)
            text = archive.read("config.json") if "config.json" in names and not damaged else None
    except (zipfile.BadZipFile, EOFError):
        raise LoadError(f"{model_path} is not a valid .keras file: it is truncated or not a "
                        "zip archive; save or copy it again") from None
    except OSError as error:
        raise LoadError(f"cannot read {model_path} ({error.strerror or type(error).__name__})"
                        ) from None
    except (RuntimeError, NotImplementedError):  # encrypted, or a compression zipfile lacks
        raise LoadError(f"{model_path} is a zip archive but not a Keras model (encrypted or "
                        "compressed in a way Keras never writes); was it written by another "
                        "program?") from None
    if damaged is not None:
        raise LoadError(f"{model_path} is corrupted ({damaged} fails its checksum); save or "
                        "copy it again")
    missing = [name for name in KERAS_ARCHIVE_MEMBERS if name not in names]
    config = parse_json(text) if text is not None else None
    if missing or not (isinstance(config, dict) and "class_name" in config):
        raise LoadError(f"{model_path} is a zip archive but not a Keras model (no "
                        f"{', '.join(missing) or 'model config'}); was it written by another "
                        "program?")
    return config


def first_damaged_member(archive):
    """The name of the first archive member whose data fails its checksum (or does not
    decompress), else None. Reads every member: well under a second even for ViT-B/16."""
    for info in archive.infolist():
        try:
            with archive.open(info) as member:
                while member.read(1 << 20):
                    pass
        except (zipfile.BadZipFile, zlib.error, EOFError):
            return info.filename
    return None


def parse_json(text):
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None


def find_python_code(config, layer=None):
    """The name of the first layer whose config holds serialized Python code (Keras writes
    a lambda as {"class_name": "__lambda__", ...}), or None."""
    if isinstance(config, dict):
        if config.get("class_name") == "__lambda__":
            return layer or "?"
        inner = config.get("config")
        if "class_name" in config and isinstance(inner, dict) and isinstance(inner.get("name"), str):
            layer = f"{config['class_name']} layer {inner['name']!r}"
        children = config.values()
    elif isinstance(config, list):
        children = config
    else:
        return None
    for child in children:
        found = find_python_code(child, layer)
        if found:
            return found
    return None


def check_model_file(path, unsafe_load=False):
    """Everything that can be checked without keras: returns (model path, run folder or
    None, archive config) or raises LoadError with a one-line message."""
    model_path, run_dir = resolve_model_path(path)
    config = read_archive_config(model_path)
    if not unsafe_load and (layer := find_python_code(config)):
        raise UnsafeModelError(f"{model_path} holds Python code ({layer}); {UNSAFE_LOAD_HINT}")
    return model_path, run_dir, config


def load_model(path, unsafe_load=False):
    """Loads a `.keras` file (or a run folder's model.keras) for inference on this backend,
    in Keras safe mode unless `unsafe_load`; a convolutional model computes in the
    backend's fastest image layout (kerasvit.models.layouts)."""
    model_path, _, archive_config = check_model_file(path, unsafe_load)
    import keras

    import kerasvit

    kerasvit.register_layers()

    if "keras_hub" in json.dumps(archive_config):
        import keras_hub  # noqa: F401  (registers keras-hub's classes)
    try:
        with warnings.catch_warnings():
            # keras-hub tasks compile themselves when rebuilt, so Keras warns that the saved
            # optimizer state does not fit; we load for inference and never use it.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model = keras.models.load_model(model_path, compile=False,
                                            safe_mode=not unsafe_load)
    except Exception as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "safe_mode=False" in str(error):  # code that our scan did not recognise
            raise UnsafeModelError(f"{model_path} holds Python code that Keras' safe mode "
                                   f"refuses; {UNSAFE_LOAD_HINT}") from None
        raise LoadError(f"cannot load {model_path}: {message[:200]}") from None
    from kerasvit import backend_ops
    from kerasvit.models import layouts, preset_graph

    model = layouts.to_data_format(model, backend_ops.fastest_data_format())
    return preset_graph.upgrade(model)


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


def load_run(path, unsafe_load=False):
    """Returns (model, run config dict or None, run folder or None)."""
    model_path, run_dir = resolve_model_path(path)
    config = read_run_file(run_dir, "config.json")
    return load_model(model_path, unsafe_load), config, run_dir


def model_name(model, config=None):
    """The registry name of a loaded model ("cnn", "vit", "vit_b16", "pretrained", ...)."""
    if config and "model" in config:
        return config["model"]
    from kerasvit.models import preset_graph

    if preset_graph.is_pipeline_model(model):
        return preset_graph.legacy_name(model)
    return model.name  # preset models are named vit_b16 or pretrained (old ones on loading)


def load_resume_config(run_dir):
    """The config of an interrupted run in `run_dir`, checked; refuses finished runs and
    folders that are not runs."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a folder; pass the folder of an interrupted run "
                          "to --resume")
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"{run_dir} is not a kerasvit run folder (no config.json); "
                          "pass the folder of an interrupted run to --resume")
    if (run_dir / "metrics.json").is_file():
        raise ConfigError(f"run {run_dir} already finished (metrics.json exists); "
                          "start a new run instead of --resume")
    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read {run_dir / 'config.json'} ({type(error).__name__}); "
                          "this run cannot be resumed, start a new one") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{run_dir / 'config.json'} is not a kerasvit config; "
                          "this run cannot be resumed, start a new one")
    return validate(config_from_dict(saved))
