"""kerasvit.export: a tiny cnn and a tiny vit (custom layers both) exported in every format
this backend can write, each artifact reloaded by its own runtime and compared with the
.keras model on real CIFAR-10 test images; a bf16 model exported as float32; the one-line
refusals (missing file, existing folder, unknown format, a format this backend cannot write)."""

import json
import os

import numpy as np
import pytest
from cli_helpers import run_cli

from kerasvit.serving import export

# What each backend writes (torch: a SavedModel needs torch_xla, which has no torch 2.13 build).
WORKING_FORMATS = {"tensorflow": ("saved_model", "onnx"), "jax": ("saved_model", "onnx"),
                   "torch": ("onnx",)}
TOLERANCE = 1e-4
TEST_IMAGES = 64
BACKEND = os.environ["KERAS_BACKEND"]


def save_tiny_model(name, path, policy="float32"):
    import keras

    from kerasvit.models import get_spec

    spec = get_spec(name)
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = spec.builder(**spec.tiny_args)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.save(path)
    return path


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export-models")
    return {name: save_tiny_model(name, folder / f"{name}.keras") for name in ("cnn", "vit")}


@pytest.fixture(scope="module")
def test_images():
    from kerasvit.data import cifar

    images, _ = cifar.load_test_images(cifar.resolve_data_dir(), TEST_IMAGES)
    return images.astype("float32")


def probabilities(logits):
    logits = np.asarray(logits, np.float64)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def run_artifact(format, path, *batches):
    """The artifact run by its own runtime (independently of kerasvit's runners) on each
    batch; returns the outputs."""
    if format == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))  # kept alive: `serve` uses its variables
        return [loaded.serve(tf.constant(batch)).numpy() for batch in batches]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [session.run(None, {name: batch})[0] for batch in batches]


@pytest.fixture(scope="module")
def keras_logits(tiny_models, test_images):
    """Each tiny .keras model's logits on the test images, as loaded from its file."""
    from kerasvit.runs import loading

    return {name: np.asarray(loading.load_model(path).predict_on_batch(test_images))
            for name, path in tiny_models.items()}


@pytest.mark.parametrize("format", WORKING_FORMATS[BACKEND])
@pytest.mark.parametrize("name", ["cnn", "vit"])
def test_artifact_predicts_as_the_keras_model(tiny_models, test_images, keras_logits, tmp_path,
                                              name, format):
    out, report = export.export(tiny_models[name], format, BACKEND, out=tmp_path / "out",
                                test_images=TEST_IMAGES, timing_repeats=0)
    artifact = out / export.ARTIFACT_NAMES[format]
    assert sorted(p.name for p in out.iterdir()) == sorted([artifact.name, "export.json"])
    assert report["converted_to_float32"] is False

    got, single = run_artifact(format, artifact, test_images, test_images[:1])
    expected = keras_logits[name]
    assert got.shape == (TEST_IMAGES, 10)
    assert np.abs(probabilities(got) - probabilities(expected)).max() <= TOLERANCE
    assert np.abs(single - got[:1]).max() < 1e-4  # any batch size, one image too

    saved = json.loads((out / "export.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["parity"]["test_images"] == TEST_IMAGES
    assert saved["parity"]["max_probability_difference"] <= TOLERANCE
    assert saved["parity"]["top1_agreement"] == 1.0
    assert saved["size_bytes"] == export.artifact_size(artifact) > 10_000
    assert saved["runtime"] == ("tensorflow" if format == "saved_model" else "onnxruntime")


def test_command_line_export(tiny_models, capsys):
    """The command's main as a user runs it: default folder beside the file, the summary,
    and a second export to the same folder refused in one line (the first one kept)."""
    from kerasvit.cli import export as export_cli

    out = tiny_models["cnn"].with_name("cnn_onnx")
    try:
        assert export_cli.main([str(tiny_models["cnn"]), "--format", "onnx", "--test-images",
                                "50", "--timing-repeats", "1"]) == out
        assert (out / "model.onnx").is_file() and (out / "export.json").is_file()
        lines = capsys.readouterr().out.strip().splitlines()
        assert lines[0].startswith(f"exported cnn as ONNX on {BACKEND}: {out / 'model.onnx'}")
        assert "max probability difference" in lines[1] and "within 1e-04" in lines[1]
        assert lines[2].startswith("latency (median ms): batch 1: ")
        assert lines[3] == f"wrote {out / 'export.json'}"
        saved = json.loads((out / "export.json").read_text())
        for key in ("latency_ms", "keras_latency_ms"):
            assert set(saved[key]) == {"batch_1", "batch_256"}
            assert all(value > 0 for value in saved[key].values())
        with pytest.raises(SystemExit) as exit_info:
            export_cli.main([str(tiny_models["cnn"]), "--format", "onnx"])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip() == (
            f"kerasvit.export: error: {out} already exists; an export never overwrites one: "
            "pass another --out or remove it")
        assert (out / "model.onnx").is_file()
    finally:
        import shutil

        shutil.rmtree(out, ignore_errors=True)


def test_mixed_precision_model_is_exported_as_float32(tmp_path, test_images):
    model_path = save_tiny_model("cnn", tmp_path / "bf16.keras", policy="mixed_bfloat16")
    out, report = export.export(model_path, "onnx", BACKEND, out=tmp_path / "out",
                                test_images=TEST_IMAGES, timing_repeats=0)
    assert report["converted_to_float32"] is True
    assert report["parity"]["max_probability_difference"] <= TOLERANCE
    # bf16 rounding is reported, not hidden: the bf16 model differs more than the export.
    assert (report["parity"]["mixed_precision_model_max_probability_difference"]
            > report["parity"]["max_probability_difference"])
    import onnx

    graph = onnx.load(str(out / "model.onnx")).graph
    assert {value.type.tensor_type.elem_type for value in graph.output} == {
        onnx.TensorProto.FLOAT}
    assert onnx.TensorProto.BFLOAT16 not in {init.data_type for init in graph.initializer}


def test_failed_export_leaves_no_folder(tiny_models, tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("converter exploded\nsecond line")

    monkeypatch.setattr(export, "write_artifact", broken)
    with pytest.raises(export.ExportError) as error:
        export.export(tiny_models["cnn"], "onnx", BACKEND, out=tmp_path / "out",
                      test_images=8, timing_repeats=0)
    assert str(error.value).startswith(f"ONNX export failed on {BACKEND}: converter exploded;")
    assert list(tmp_path.iterdir()) == []


def one_error_line(result):
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kerasvit.export: error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("args, expected", [
    (["missing.keras", "--format", "onnx"], "missing.keras does not exist"),
    (["{cnn}", "--format", "tflite"], "argument --format: invalid choice: 'tflite'"),
    (["{cnn}"], "the following arguments are required: --format"),
    (["{cnn}", "--format", "onnx", "--out", "{existing}"], "already exists"),
    (["{cnn}", "--format", "onnx", "--test-images", "0"], "--test-images must be at least 1"),
    (["{cnn}", "--format", "onnx", "--test-images", "10001"], "more than the 10,000 CIFAR-10"),
])
def test_bad_inputs_give_one_line(tiny_models, tmp_path, args, expected):
    (tmp_path / "taken").mkdir()
    args = [arg.format(cnn=tiny_models["cnn"], existing=tmp_path / "taken") for arg in args]
    assert expected in one_error_line(run_cli("export", args, cwd=tmp_path, check=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_torch_saved_model_is_refused_in_one_line(tiny_models, tmp_path):
    from cli_helpers import cli_env

    result = run_cli("export", [tiny_models["cnn"], "--format", "saved_model"], cwd=tmp_path,
                     env=cli_env(KERAS_BACKEND="torch"), check=False)
    line = one_error_line(result)
    assert "a SavedModel cannot be written on torch" in line
    assert "KERAS_BACKEND=tensorflow" in line
