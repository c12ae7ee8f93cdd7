"""Experiment configuration: one TOML file per experiment, strict type-checked overrides.

A config is a flat `TrainConfig` plus a `model_args` table whose keys are the keyword
arguments of the model's builder (checked against the builder's signature). Nothing here
imports keras, so bad input is refused before the slow framework imports.
"""

import dataclasses
import inspect
import json
import math
from pathlib import Path

import tomllib

from kerasvit.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

AUGMENTATIONS = ("none", "pad_crop_flip", "random_resized_crop_flip", "translate_alternating_flip")
OPTIMIZERS = ("adamw", "nesterov_sgd")
SCHEDULES = ("warmup_cosine", "triangular", "linear_decay")
PRECISION_CHOICES = ("auto", "on", "off")  # see kerasvit.training.precision.resolve_precision
TTA_METHODS = ("flip", "flip_translate")
BOOLEAN_PRECISION = {"true": "on", "false": "off", "1": "on", "0": "off", "yes": "on", "no": "off"}
JIT_CHOICES = ("auto", "on", "off")
WHITENING_BIAS_SCHEDULES = ("stop", "fade")
DISTRIBUTE_CHOICES = ("none", "data_parallel")  # see kerasvit.distribution
CHOICES = {"augmentation": AUGMENTATIONS, "jit_compile": JIT_CHOICES,
           "distribute": DISTRIBUTE_CHOICES, "optimizer": OPTIMIZERS, "schedule": SCHEDULES,
           "mixed_precision": PRECISION_CHOICES, "tta_method": TTA_METHODS,
           "whitening_bias_schedule": WHITENING_BIAS_SCHEDULES}


class ConfigError(UserError, ValueError):
    """Bad configuration value; the message is shown to the user as one line."""


@dataclasses.dataclass
class TrainConfig:
    model: str = "cnn"
    epochs: int = 10
    batch_size: int = 256
    # "adamw": AdamW, no decay on norms, biases, embeddings. "nesterov_sgd": airbench's
    # Nesterov SGD with lookahead (kerasvit.training.optimizers); its learning_rate and weight_decay
    # are in airbench's decoupled form, per 1024 examples.
    optimizer: str = "adamw"
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    momentum: float = 0.9  # nesterov_sgd only
    # nesterov_sgd: learning-rate multiplier for BatchNorm offsets (their decay is not scaled).
    bias_lr_scale: float = 1.0
    # nesterov_sgd: sync the weights with their slow copy every N steps (0: no lookahead).
    lookahead_every: int = 0
    # nesterov_sgd: conv kernels take Muon's orthogonalized steps (airbench94_muon) at this
    # peak rate, on the same schedule, with their own momentum (0: plain SGD steps).
    muon_learning_rate: float = 0.0
    muon_momentum: float = 0.6
    # Epochs during which a patch-whitening layer's bias trains (0: it trains all along).
    whitening_bias_epochs: float = 0.0
    # nesterov_sgd: how that bias trains. "stop": at the base rate, on the schedule, until
    # it stops (airbench94). "fade": at the BN offsets' rate (bias_lr_scale), falling
    # linearly to zero over whitening_bias_epochs (airbench94_muon).
    whitening_bias_schedule: str = "stop"
    # "warmup_cosine": linear warmup, then cosine to zero. "triangular": linear from 0.2x
    # to the peak during the warmup, then linear down to 0.07x (airbench94). "linear_decay":
    # from the peak straight down to zero (airbench94_muon).
    schedule: str = "warmup_cosine"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    # bfloat16 compute: "on", "off", or "auto" (on where the device runs it natively and
    # the bench measured it faster; the run's env.json says what was chosen and why).
    mixed_precision: str = "auto"
    # "auto": XLA on JAX (it needs it), eager graphs on TF/torch, which measured faster here.
    jit_compile: str = "auto"
    seed: int = 0
    # 0 means every training image; N takes the first N images of each class.
    subset_per_class: int = 0
    validation_size: int = 5000
    # 0 means the whole 10,000-image test split; N tests on its first N images (quick checks).
    test_images: int = 0
    # 0 means every test image; N tests on the first N test images of each class (the subset
    # experiment: e.g. 100 training and 25 test images per class). test_images applies after.
    test_per_class: int = 0
    augmentation: str = "pad_crop_flip"
    # "" means $TFDS_DATA_DIR, else TFDS's default (~/tensorflow_datasets).
    data_dir: str = ""
    # 0 means a full pass over the training split; a positive value caps each epoch.
    steps_per_epoch: int = 0
    # "data_parallel": split each (global) batch over every device; JAX only.
    distribute: str = "none"
    # Minutes of whole-process wall time; > 0 sizes `epochs` to fit (see kerasvit.training.budget).
    time_budget_minutes: float = 0.0
    # Also report test accuracy averaged over views of each image: "flip" (the image and
    # its mirror) or "flip_translate" (also 1-pixel shifts, airbench's TTA).
    test_time_augmentation: bool = False
    tta_method: str = "flip"
    model_args: dict = dataclasses.field(default_factory=dict)

    def to_dict(self):
        return dataclasses.asdict(self)


FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(TrainConfig)}


def config_path_for_model(model_name):
    return CONFIG_DIR / f"{model_name}.toml"


def read_config_values(path, _seen=()):
    """The keys of a TOML experiment file, with those of the file it `extends` (a path
    relative to it) underneath: the file's own keys win, its model_args are merged in."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass an existing file to --config")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML ({error})") from None
    base_name = raw.pop("extends", None)
    if base_name is None:
        return raw
    if not isinstance(base_name, str):
        raise ConfigError(f"extends in {path} must be a file name, got {base_name!r}")
    base_path = (path.parent / base_name).resolve()
    if base_path in _seen or base_path == path.resolve():
        raise ConfigError(f"config file {path} extends {base_name}, which extends it again; "
                          "remove the loop")
    base = read_config_values(base_path, (*_seen, path.resolve()))
    model_args = {**base.get("model_args", {}), **raw.get("model_args", {})}
    merged = {**base, **raw}
    if model_args:
        merged["model_args"] = model_args
    return merged


def load_config_file(path):
    """Reads a TOML experiment file (and the one it extends) into a checked `TrainConfig`."""
    config = TrainConfig()
    for key, value in read_config_values(path).items():
        set_value(config, key, value)
    return config


def coerce(key, value, expected_type):
    """Returns `value` as `expected_type`, parsing strings from the command line."""
    if isinstance(value, str) and expected_type is not str:
        value = parse_string(key, value, expected_type)
    if expected_type is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            raise ConfigError(f"{key} is too large for a number of type float") from None
    if expected_type in (list, tuple) and isinstance(value, (list, tuple)):
        return list(value)
    if expected_type is int and isinstance(value, bool):
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if not isinstance(value, expected_type):
        raise ConfigError(
            f"{key} must be of type {expected_type.__name__}, got {value!r} "
            f"({type(value).__name__})"
        )
    return value


def parse_string(key, text, expected_type):
    if expected_type is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key} must be true or false, got {text!r}")
    try:
        if expected_type in (int, float):
            return expected_type(text)
        return json.loads(text)
    except (ValueError, json.JSONDecodeError):
        raise ConfigError(
            f"{key} must be of type {expected_type.__name__}, got {text!r}"
        ) from None


def set_value(config, key, value):
    """Sets `key` (a field, or `model_args.NAME`) with type checking; unknown keys are errors."""
    if key == "model_args":
        if not isinstance(value, dict):
            raise ConfigError("model_args must be a table of builder arguments")
        for arg_name, arg_value in value.items():
            config.model_args[arg_name] = arg_value
        return
    if key.startswith("model_args."):
        config.model_args[key.split(".", 1)[1]] = value
        return
    if key == "mixed_precision" and str(value).lower() in BOOLEAN_PRECISION:
        value = BOOLEAN_PRECISION[str(value).lower()]  # configs from before "auto": true/false
    if key not in FIELD_TYPES:
        known = ", ".join(sorted(FIELD_TYPES))
        raise ConfigError(f"unknown config key {key!r}; known keys: {known}, model_args.<name>")
    setattr(config, key, coerce(key, value, FIELD_TYPES[key]))


def split_override(assignment):
    """A `--set KEY=VALUE` string as (key, value)."""
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE, got {assignment!r}")
    return key.strip(), value


def apply_overrides(config, assignments):
    """Applies `KEY=VALUE` strings from `--set`."""
    for assignment in assignments:
        set_value(config, *split_override(assignment))
    return config


def resolve(config_file, model, flag_values, overrides):
    """The config of an entry point: `config_file` (else configs/<model>.toml), then the flags
    given ({key: value}, None meaning not given), then `KEY=VALUE` overrides; validated."""
    if config_file:
        config = load_config_file(config_file)
        if model and model != config.model:
            raise ConfigError(f"--model {model} contradicts model = {config.model!r} in {config_file}")
    else:
        config = load_config_file(config_path_for_model(model or "cnn"))
    for key, value in flag_values.items():
        if value is not None:
            set_value(config, key, value)
    apply_overrides(config, overrides)
    return validate(config)


def check_model_args(config, builder):
    """Checks `config.model_args` against the builder's keyword arguments and their types."""
    parameters = inspect.signature(builder).parameters
    for name, value in list(config.model_args.items()):
        if name not in parameters:
            known = ", ".join(p for p in parameters)
            raise ConfigError(
                f"unknown model argument {name!r} for model {config.model!r}; known: {known}"
            )
        default = parameters[name].default
        if default is None or default is inspect.Parameter.empty:
            if isinstance(value, str):
                value = parse_loose(value)
        else:
            value = coerce(f"model_args.{name}", value, type(default))
        config.model_args[name] = value


def parse_loose(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def validate(config):
    """Range checks that the types alone cannot express."""
    from kerasvit.models import MODEL_NAMES

    if config.model not in MODEL_NAMES:
        raise ConfigError(f"unknown model {config.model!r}; choose one of {', '.join(MODEL_NAMES)}")
    positive = ("epochs", "batch_size")
    for name in positive:
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be positive, got {getattr(config, name)}")
    for name in ("learning_rate", "weight_decay", "warmup_epochs", "label_smoothing",
                 "time_budget_minutes"):
        if not math.isfinite(getattr(config, name)):
            raise ConfigError(f"{name} must be a finite number, got {getattr(config, name)}")
    if config.learning_rate <= 0:
        raise ConfigError(f"learning_rate must be positive, got {config.learning_rate}")
    for name in ("subset_per_class", "validation_size", "test_images", "test_per_class",
                 "steps_per_epoch",
                 "weight_decay", "warmup_epochs", "label_smoothing", "time_budget_minutes"):
        if getattr(config, name) < 0:
            raise ConfigError(f"{name} must be >= 0, got {getattr(config, name)}")
    if config.label_smoothing > 1:
        raise ConfigError(f"label_smoothing must be at most 1, got {config.label_smoothing}")
    for name, choices in CHOICES.items():
        if getattr(config, name) not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, "
                              f"got {getattr(config, name)!r}")
    for name in ("momentum", "muon_momentum"):
        if not 0 <= getattr(config, name) < 1:
            raise ConfigError(f"{name} must be in [0, 1), got {getattr(config, name)}")
    if not config.bias_lr_scale > 0:
        raise ConfigError(f"bias_lr_scale must be positive, got {config.bias_lr_scale}")
    for name in ("whitening_bias_epochs", "lookahead_every", "muon_learning_rate"):
        value = getattr(config, name)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{name} must be >= 0, got {value}")
    if config.whitening_bias_schedule == "fade" and not config.whitening_bias_epochs:
        raise ConfigError("whitening_bias_schedule 'fade' needs whitening_bias_epochs > 0 "
                          "(the epochs over which the whitening bias fades to zero)")
    return config


def config_from_dict(data):
    """Rebuilds a config saved as `config.json` (used by --resume)."""
    config = TrainConfig()
    for key, value in data.items():
        set_value(config, key, value)
    return config
