"""bench/: the native PyTorch twins are the same networks as kerasvit's (parameter counts,
output shapes), and bench/throughput.py writes the JSON its README describes. Tiny and
CPU-only; the real measurement is `python bench/throughput.py --model cnn --json out.json`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from optional_extras import import_extra

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import native_models  # noqa: E402


def keras_counts(model):
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return trainable, frozen


@pytest.mark.parametrize("name", ["cnn", "vit"])
def test_native_twin_has_the_keras_parameter_counts_and_output_shape(name):
    from kerasvit import models

    keras_model = models.build_model(name)
    native = native_models.build_native(name)
    assert native_models.param_counts(native) == keras_counts(keras_model)
    images = torch.rand(2, 3, 32, 32) * 255
    native.eval()
    with torch.no_grad():
        assert tuple(native(images).shape) == (2, 10)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = native(images.contiguous(memory_format=torch.channels_last))
    assert tuple(logits.shape) == (2, 10) and logits.dtype == torch.float32


def keras_cnn_weights_into_native(keras_model, native):
    """Copies build_cnn's weights into NativeCNN (kernels HWIO -> OIHW, Dense (in, out) ->
    Linear (out, in)), layer by layer by name."""
    import keras

    def tensor(layer_name, attribute, permute=None):
        variable = getattr(keras_model.get_layer(layer_name), attribute)
        value = torch.from_numpy(np.array(keras.ops.convert_to_numpy(variable)))
        return value.permute(*permute) if permute else value

    with torch.no_grad():
        native.whiten.weight.copy_(tensor("whiten", "kernel", (3, 2, 0, 1)))
        native.whiten.bias.copy_(tensor("whiten", "bias"))
        for index, block in enumerate(native.blocks, start=1):
            for part in ("a", "b"):
                name = f"block{index}_{part}"
                getattr(block, f"conv_{part}").weight.copy_(
                    tensor(f"{name}_conv", "kernel", (3, 2, 0, 1)))
                bn = getattr(block, f"bn_{part}")
                bn.bias.copy_(tensor(f"{name}_bn", "beta"))
                bn.running_mean.copy_(tensor(f"{name}_bn", "moving_mean"))
                bn.running_var.copy_(tensor(f"{name}_bn", "moving_variance"))
        native.head.weight.copy_(tensor("head", "kernel", (1, 0)))


def test_native_cnn_computes_the_keras_cnn():
    """Same weights -> same logits (inference) and the same identity-started convs."""
    from kerasvit import models

    args = dict(widths=(8, 16, 16))
    keras_model = models.build_model("cnn", **args)
    rng = np.random.default_rng(0)
    weights = []
    for variable in keras_model.weights:
        value = rng.normal(size=variable.shape).astype("float32") * 0.5
        weights.append(np.abs(value) + 0.5 if "moving_variance" in variable.path else value)
    keras_model.set_weights(weights)
    native = native_models.build_native("cnn", **args).eval()
    for block in native.blocks:  # PartialIdentity: a centre tap of 1 on the first channels
        weight = block.conv_a.weight
        count = min(weight.shape[:2])
        assert torch.equal(weight[:count, :, 1, 1], torch.eye(count, weight.shape[1]))
    keras_cnn_weights_into_native(keras_model, native)
    images = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    with torch.no_grad():
        logits = native(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(logits, keras_model.predict_on_batch(images), rtol=1e-4, atol=1e-4)


def test_native_nesterov_sgd_follows_the_airbench94_config():
    from kerasvit.config import config_path_for_model, load_config_file
    from kerasvit.training import optimizers

    config = load_config_file("configs/cnn_airbench94.toml").to_dict()
    assert config["optimizer"] == "nesterov_sgd"
    eta, decay = optimizers.airbench_hyperparameters(
        config["learning_rate"], config["weight_decay"], config["momentum"], config["batch_size"])
    assert native_models.airbench_hyperparameters(
        config["learning_rate"], config["weight_decay"], config["momentum"],
        config["batch_size"]) == (eta, decay)
    native = native_models.build_native("cnn", widths=(8, 8))
    optimizer, scheduler, name = native_models.make_optimizer(native, config, steps_per_epoch=10)
    assert isinstance(optimizer, torch.optim.SGD) and "nesterov" in name
    other, norm, whitening = optimizer.param_groups
    assert all(g["nesterov"] and g["momentum"] == config["momentum"] for g in (other, norm))
    scale = config["bias_lr_scale"]
    assert (other["lr"], other["weight_decay"]) == pytest.approx((0.2 * eta, decay))
    assert (norm["lr"], norm["weight_decay"]) == pytest.approx((0.2 * eta * scale, decay / scale))
    bn_biases = [m.bias for m in native.modules() if isinstance(m, native_models.BatchNorm)]
    assert {id(p) for p in norm["params"]} == {id(p) for p in bn_biases}
    assert whitening["params"] == [native.whiten.bias] and native.whiten.bias.requires_grad
    assert not native.whiten.weight.requires_grad
    trainable = sum(len(g["params"]) for g in optimizer.param_groups)
    assert trainable == sum(1 for p in native.parameters() if p.requires_grad)
    # The whitening bias stops after whitening_bias_epochs (3 x 10 steps), as in Keras.
    for _ in range(30):
        optimizer.step()
        scheduler.step()
    assert whitening["lr"] == 0.0 and other["lr"] > 0.0
    vit, _, vit_name = native_models.make_optimizer(
        native_models.build_native("vit", num_layers=1),
        load_config_file(config_path_for_model("vit")).to_dict(), steps_per_epoch=10)
    assert isinstance(vit, torch.optim.AdamW) and "AdamW" in vit_name


def test_native_muon_follows_the_default_cnn_config():
    """configs/cnn.toml: the conv kernels take Muon steps on their own group, the rest SGD;
    every rate falls linearly to zero, as in Keras."""
    from kerasvit.config import config_path_for_model, load_config_file

    config = load_config_file(config_path_for_model("cnn")).to_dict()
    assert config["muon_learning_rate"] > 0 and config["schedule"] == "linear_decay"
    torch.manual_seed(0)
    native = native_models.build_native("cnn", widths=(8, 8))
    optimizer, scheduler, name = native_models.make_optimizer(native, config, steps_per_epoch=10)
    assert isinstance(optimizer, native_models.NesterovSGDWithMuon) and "Muon" in name
    kernels = [p for p in native.parameters() if p.requires_grad and p.ndim == 4]
    (muon,) = optimizer.muon_groups
    assert {id(p) for p in muon["params"]} == {id(p) for p in kernels} and kernels
    sgd_params = {id(p) for group in optimizer.sgd.param_groups for p in group["params"]}
    assert not sgd_params & {id(p) for p in kernels}
    assert muon["lr"] == pytest.approx(config["muon_learning_rate"])
    before = [kernel.detach().clone() for kernel in kernels]
    native(torch.rand(4, 3, 32, 32) * 255).sum().backward()
    optimizer.step()
    scheduler.step()
    for kernel, old in zip(kernels, before):
        assert not torch.equal(kernel, old)
        # The step starts from the kernel renormalised to norm sqrt(filters).
        assert float(kernel.norm()) == pytest.approx(kernel.shape[0] ** 0.5, rel=0.5)
    # Keras' TriangularSchedule with no warmup holds the peak for step 0 and 1, then falls.
    scheduler.step()
    total = int(config["epochs"] * 10)
    assert muon["lr"] == pytest.approx(config["muon_learning_rate"] * (1 - 1 / (total - 1)))
    assert optimizer.sgd.param_groups[0]["lr"] < optimizer.sgd.param_groups[0]["initial_lr"]


def test_native_vit_explicit_attention_equals_fused():
    torch.manual_seed(0)
    fused = native_models.build_native("vit", num_layers=2).eval()
    explicit = native_models.build_native("vit", num_layers=2, fused_attention=False).eval()
    explicit.load_state_dict(fused.state_dict())
    images = torch.rand(2, 3, 32, 32) * 255
    with torch.no_grad():
        torch.testing.assert_close(fused(images), explicit(images), atol=1e-4, rtol=1e-4)


def test_previews_keep_the_parameter_counts(backend):
    from bench import keras_side
    from kerasvit import models

    vit_args = dict(num_layers=2, hidden_dim=32, mlp_dim=64, num_heads=2)
    fused = keras_side.build_vit_fused_attention(**vit_args)
    assert keras_counts(fused) == keras_counts(models.build_model("vit", **vit_args))
    if backend == "torch":  # the backend the fused path is for; elsewhere it costs a compile
        images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
        assert fused.predict_on_batch(images).shape == (2, 10)


def test_hf_vit_has_the_keras_hub_vit_parameter_count():
    import_extra("transformers", "pip install -e '.[hf]'")
    pytest.importorskip("keras_hub")
    from bench import keras_side

    arch = dict(image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2,
                hidden_dim=32, mlp_dim=64)
    keras_model = keras_side.build_vit_b16(arch)
    hf = native_models.HFLogits(native_models.build_hf_vit(arch))
    assert native_models.param_counts(hf) == keras_counts(keras_model)
    with torch.no_grad():
        assert tuple(hf(torch.zeros(2, 3, 32, 32)).shape) == (2, 10)


CONTENDER_KEYS = {"name", "kind", "backend", "precision", "status", "images_per_s",
                  "eval_images_per_s", "train", "eval", "params", "setup", "worker"}
STATS_KEYS = {"images_per_s", "images_per_s_p10", "images_per_s_p90", "images_per_s_iqr",
              "step_s_median", "steps", "per_round_images_per_s"}
TOP_KEYS = {"schema_version", "model", "best_keras_over_best_native",
            "best_keras_over_best_native_eval", "best", "goals", "pipeline", "param_check",
            "contenders", "settings", "method", "machine", "versions", "other_cpu_share"}


def test_throughput_writes_the_json_schema(tmp_path, backend):
    out = tmp_path / "cnn.json"
    md = tmp_path / "cnn.md"
    command = [
        sys.executable, str(REPO / "bench" / "throughput.py"), "--model", "cnn",
        "--json", str(out), "--md", str(md), "--steps", "2", "--warmup", "1", "--rounds", "1",
        "--batch-size", "8", "--synthetic", "--synthetic-images", "64",
        "--pipeline-batches", "2", "--pause", "0",
        "--model-args", '{"widths": [8, 8]}',
        "--contenders", f"keras-{backend}-fp32,native-fp32",
    ]
    env = {**os.environ, "KERAS_BACKEND": backend}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert TOP_KEYS <= set(report)
    names = {c["name"]: c for c in report["contenders"]}
    assert set(names) == {f"keras-{backend}-fp32", "native-fp32"}
    for contender in names.values():
        assert CONTENDER_KEYS <= set(contender), contender
        assert contender["status"] == "ok", contender.get("error")
        assert STATS_KEYS <= set(contender["train"]) and STATS_KEYS <= set(contender["eval"])
        assert contender["train"]["steps"] == 2 and contender["images_per_s"] > 0
    assert report["param_check"]["match"] is True
    assert report["best_keras_over_best_native"] > 0
    assert report["best_keras_over_best_native_eval"] > 0
    pipeline = report["pipeline"]
    assert pipeline["images_per_s"] > 0 and pipeline["ratio_to_fastest_training"] > 0
    cpu = report["machine"]["cpu"]
    assert {"model", "logical_cpus", "flags"} <= set(cpu) and "amx_bf16" in cpu["flags"]
    assert "best_keras_over_best_native" in md.read_text()
