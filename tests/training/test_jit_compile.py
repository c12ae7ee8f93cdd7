"""--jit-compile auto: one table (backend, device kind) -> (value, why), the same pick in
model.compile and in the run folder's env.json; on and off are taken as given."""

import json

import pytest

from kerasvit.runs import environment
from kerasvit.training import recipe


@pytest.mark.parametrize("backend, device_kind, value", [
    ("jax", "cpu", True), ("jax", "gpu", True),
    ("tensorflow", "cpu", False), ("torch", "cpu", False),  # what kerasvit always did
    ("tensorflow", "gpu", False), ("torch", "gpu", False),  # not measured on a GPU yet
])
def test_auto_picks_per_backend_and_device_with_a_reason(backend, device_kind, value):
    picked, reason = recipe.choose_jit_compile(backend, device_kind)
    assert picked is value
    assert reason.startswith(f"auto: {backend} on the {device_kind.upper()}: ") and "\n" not in reason


def test_any_accelerator_counts_as_a_gpu():
    assert recipe.choose_jit_compile("torch", "tpu") == recipe.choose_jit_compile("torch", "gpu")


@pytest.mark.parametrize("setting, value", [("on", True), ("off", False)])
def test_on_and_off_are_taken_as_given_on_every_backend(setting, value):
    for backend in ("tensorflow", "jax", "torch"):
        choice = recipe.jit_compile_choice(setting, backend, "cpu")
        assert choice == {"setting": setting, "value": value, "reason": f"--jit-compile {setting}"}
        assert recipe.resolve_jit_compile(setting, backend) is value


def test_auto_looks_up_the_device(monkeypatch):
    monkeypatch.setattr(environment, "list_devices", lambda: ["cuda:0"])
    monkeypatch.setattr(recipe, "JIT_TABLE", {**recipe.JIT_TABLE, ("torch", "gpu"): (True, "t")})
    assert recipe.jit_compile_choice("auto", "torch") == {
        "setting": "auto", "value": True, "reason": "auto: torch on the GPU: t"}
    monkeypatch.setattr(environment, "list_devices", lambda: ["cpu:0"])
    assert recipe.resolve_jit_compile("auto", "torch") is False


def test_env_json_records_the_pick_and_the_flag_sets_it(tmp_path, backend):
    from cli_helpers import TINY_TRAIN_FLAGS, run_train

    run_train([*TINY_TRAIN_FLAGS, "--epochs", "1", "--jit-compile", "off"], tmp_path)
    (run_dir,) = (tmp_path / "runs").iterdir()
    env = json.loads((run_dir / "env.json").read_text())
    assert env["jit_compile"] == {"setting": "off", "value": False, "reason": "--jit-compile off"}
    assert json.loads((run_dir / "config.json").read_text())["jit_compile"] == "off"
