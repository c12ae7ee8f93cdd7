"""Config files and overrides: strict types, unknown keys refused, builder arguments checked."""

import pytest

from kerasvit import config as cfg
from kerasvit.models import MODEL_NAMES, get_spec


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_every_model_has_a_valid_config_file_with_command_and_expectation(model):
    path = cfg.config_path_for_model(model)
    text = path.read_text()
    assert "Command:" in text and "Expected:" in text
    config = cfg.validate(cfg.load_config_file(path))
    assert config.model == model
    cfg.check_model_args(config, get_spec(model).builder)


def test_overrides_are_parsed_to_the_field_type():
    config = cfg.apply_overrides(cfg.TrainConfig(), [
        "epochs=3", "learning_rate=1e-4", "mixed_precision=true", "augmentation=none",
    ])
    assert (config.epochs, config.learning_rate, config.mixed_precision) == (3, 1e-4, "on")
    assert config.augmentation == "none"


@pytest.mark.parametrize("assignment, fragment", [
    ("epoch=3", "unknown config key 'epoch'"),
    ("epochs=three", "epochs must be of type int"),
    ("epochs=2.5", "epochs must be of type int"),
    ("epochs", "expects KEY=VALUE"),
])
def test_bad_overrides_are_refused_with_the_reason(assignment, fragment):
    with pytest.raises(cfg.ConfigError, match=fragment):
        cfg.apply_overrides(cfg.TrainConfig(), [assignment])


@pytest.mark.parametrize("key, value, fragment", [
    ("epochs", 0, "epochs must be positive"),
    ("batch_size", -8, "batch_size must be positive"),
    ("subset_per_class", -1, "subset_per_class must be >= 0"),
    ("augmentation", "mixup", "augmentation must be one of"),
    ("jit_compile", "yes", "jit_compile must be one of"),
    ("mixed_precision", "maybe", "mixed_precision must be one of auto, on, off"),
    ("optimizer", "adam", "optimizer must be one of adamw, nesterov_sgd"),
    ("momentum", 1.0, r"momentum must be in \[0, 1\)"),
    ("lookahead_every", -1, "lookahead_every must be >= 0"),
    ("whitening_bias_schedule", "decay", "whitening_bias_schedule must be one of stop, fade"),
    ("whitening_bias_schedule", "fade", "'fade' needs whitening_bias_epochs > 0"),
    ("model", "resnet", "unknown model"),
])
def test_out_of_range_values_are_refused(key, value, fragment):
    config = cfg.TrainConfig()
    setattr(config, key, value)
    with pytest.raises(cfg.ConfigError, match=fragment):
        cfg.validate(config)


def test_model_args_are_checked_against_the_builder_signature():
    builder = get_spec("vit").builder
    config = cfg.apply_overrides(cfg.TrainConfig(model="vit"), ["model_args.num_layers=2"])
    cfg.check_model_args(config, builder)
    assert config.model_args["num_layers"] == 2

    typo = cfg.apply_overrides(cfg.TrainConfig(model="vit"), ["model_args.num_layer=2"])
    with pytest.raises(cfg.ConfigError, match="unknown model argument 'num_layer'"):
        cfg.check_model_args(typo, builder)

    wrong_type = cfg.apply_overrides(cfg.TrainConfig(model="vit"), ["model_args.hidden_dim=big"])
    with pytest.raises(cfg.ConfigError, match="model_args.hidden_dim must be of type int"):
        cfg.check_model_args(wrong_type, builder)


def test_saved_config_round_trips(tmp_path):
    config = cfg.apply_overrides(cfg.TrainConfig(model="vit"), ["model_args.num_layers=2", "seed=7"])
    assert cfg.config_from_dict(config.to_dict()) == config


def test_a_config_file_extends_another_and_changes_only_its_keys(tmp_path):
    (tmp_path / "base.toml").write_text('model = "cnn"\nepochs = 7\nbatch_size = 64\n'
                                        '[model_args]\nwidths = [8, 16, 32]\n'
                                        'batch_norm_momentum = 0.5\n')
    (tmp_path / "child.toml").write_text('extends = "base.toml"\nbatch_size = 32\n'
                                         '[model_args]\nwidths = [4, 8, 16]\n')
    config = cfg.load_config_file(tmp_path / "child.toml")
    assert (config.model, config.epochs, config.batch_size) == ("cnn", 7, 32)
    assert config.model_args == {"widths": [4, 8, 16], "batch_norm_momentum": 0.5}


@pytest.mark.parametrize("files, fragment", [
    ({"a.toml": 'extends = "a.toml"'}, "extends a.toml, which extends it again"),
    ({"a.toml": 'extends = "b.toml"', "b.toml": 'extends = "a.toml"'}, "which extends it again"),
    ({"a.toml": 'extends = "missing.toml"'}, "missing.toml not found"),
    ({"a.toml": "extends = 3"}, "extends in .* must be a file name"),
])
def test_bad_extends_is_one_config_error(tmp_path, files, fragment):
    for name, text in files.items():
        (tmp_path / name).write_text(text + "\n")
    with pytest.raises(cfg.ConfigError, match=fragment):
        cfg.load_config_file(tmp_path / "a.toml")
