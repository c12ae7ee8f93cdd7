"""What users run, as they run it: scripts/quickstart.sh's commands and every configs/*.toml,
through `python -m kerasvit.train` in a subprocess, shortened only by `--set` overrides (one
epoch of two small steps, a few test images). Slow: each pays the CLI's start-up and a model
build, so CI runs them (KERASVIT_SLOW=1) and the default pass leaves them out."""

import json
import shlex

import pytest
from cli_helpers import REPO, cli_env, run_cli
from suite_passes import in_one_pass
from tiny_presets import FAMILIES, save_tiny_preset

# Each backend trains the models (tests/models, tests/training); what these check, that a
# config's keys resolve and its run writes what it promises, does not depend on the backend.
pytestmark = [pytest.mark.slow, in_one_pass("a config file means the same on every backend")]

CONFIGS = sorted((REPO / "configs").glob("*.toml"))
# The shortening: everything else stays as the file says. time_budget_minutes=0 because a
# budget would choose the epochs (vit_fast, cnn_fast).
SHORTENING = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 16, "subset_per_class": 10,
              "validation_size": 50, "test_images": 64, "time_budget_minutes": 0}
SHORT_FLAGS = [flag for key, value in SHORTENING.items() for flag in ("--set", f"{key}={value}")]
# evaluate's own shortening flags: its test images and timed batches.
SHORT_EVALUATE_FLAGS = ["--test-images", "64", "--timing-repeats", "2"]


def config_values(path):
    """The file's resolved config (its `extends` chain applied), as config.json records it."""
    from kerasvit import config

    return config.resolve(str(path), None, {}, []).to_dict()


def preset_family(preset):
    (family,) = [family for family in FAMILIES if family in preset]
    return family


@pytest.fixture(scope="module")
def tiny_presets(tmp_path_factory, cifar_batch):
    """family -> a local preset folder; the configs' preset names cannot be fetched here."""
    folder = tmp_path_factory.mktemp("presets")
    images = cifar_batch[0][:16]
    for family in FAMILIES:
        save_tiny_preset(family, folder / family, images)
    return {family: str(folder / family) for family in FAMILIES}


def test_every_config_is_covered_here():
    """The preset configs need a tiny local preset of their family; a new family must add one."""
    assert len(CONFIGS) >= 10
    for path in CONFIGS:
        preset = config_values(path)["model_args"].get("preset")
        if preset:
            preset_family(preset)


@pytest.mark.parametrize("path", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_config_trains_and_tests_as_written(path, tmp_path, tiny_presets, backend):
    expected = config_values(path)
    args = ["--config", str(path), "--run-dir", str(tmp_path / "run"), *SHORT_FLAGS]
    preset = expected["model_args"].get("preset")
    if preset:
        args += ["--preset", tiny_presets[preset_family(preset)]]
    run_cli("train", args, tmp_path, env=cli_env(KERAS_BACKEND=backend), timeout=900)

    run_dir = tmp_path / "run"
    recorded = json.loads((run_dir / "config.json").read_text())
    for key, value in expected.items():
        if key == "model_args":
            for arg, arg_value in value.items():
                if arg != "preset":
                    assert recorded["model_args"][arg] == arg_value, arg
        elif key not in SHORTENING:
            assert recorded[key] == value, key
    assert json.loads((run_dir / "env.json").read_text())["backend"] == backend
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    if expected["test_time_augmentation"]:
        assert 0.0 <= metrics["test_accuracy_tta"] <= 1.0
    assert (run_dir / "model.keras").stat().st_size > 0


def quickstart_commands(run_dir):
    """scripts/quickstart.sh's kerasvit commands, as argument lists for this Python."""
    commands = []
    for line in (REPO / "scripts" / "quickstart.sh").read_text().splitlines():
        if " -m kerasvit." in line and not line.lstrip().startswith("#"):
            words = shlex.split(line.replace("$RUN_DIR", str(run_dir)))
            assert words[0] == ".venv/bin/python", line
            commands.append((words[2].removeprefix("kerasvit."), words[3:]))
    return commands


def test_quickstart_commands_as_written(tmp_path, backend):
    run_dir = tmp_path / "runs" / "quickstart"
    commands = quickstart_commands(run_dir)
    assert [program for program, _ in commands] == ["train", "evaluate"]
    env = cli_env(KERAS_BACKEND=backend)
    (_, train_args), (_, evaluate_args) = commands
    run_cli("train", train_args + SHORT_FLAGS, REPO, env=env, timeout=900)
    result = run_cli("evaluate", evaluate_args + SHORT_EVALUATE_FLAGS, REPO, env=env, timeout=900)
    assert "accuracy" in result.stdout.lower()
    # What the script tells the user to open next.
    assert (run_dir / "report.md").is_file()
    assert json.loads((run_dir / "env.json").read_text())["backend"] == backend
