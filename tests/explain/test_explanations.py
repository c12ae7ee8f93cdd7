"""Explainability: attention maps and rollout, Grad-CAM, the same maps on every backend,
and the explain CLI. Tiny random-weight models keep it fast; the maps' math does not need
a trained model, and the synthetic Grad-CAM case has a known answer.

Also a worker script: `python tests/explain/test_explanations.py OUT.npz IMAGES.npy MODEL.keras...`
computes the maps on $KERAS_BACKEND, for the cross-backend test.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from suite_passes import in_one_pass

REPO = Path(__file__).resolve().parents[2]
BACKENDS = ("tensorflow", "jax", "torch")
MAP_KEYS = ("gradcam", "rollout", "layers", "predicted")


# ---------------------------------------------------------------- tiny saved models

def build_tiny(name):
    import keras

    keras.utils.set_random_seed(0)
    if name == "cnn":
        from kerasvit.models.cnn import build_cnn

        return build_cnn(widths=(8, 16, 16))
    if name == "vit":
        from kerasvit.models.vit import build_vit

        return build_vit(patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32)
    import keras_hub

    backbone = keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=2,
                                            num_heads=2, hidden_dim=16, mlp_dim=32)
    converter = keras_hub.layers.ViTImageConverter(image_size=(32, 32), scale=1 / 127.5, offset=-1)
    preprocessor = keras_hub.models.ViTImageClassifierPreprocessor(image_converter=converter)
    return keras_hub.models.ViTImageClassifier(backbone, num_classes=10,
                                               preprocessor=preprocessor, activation=None)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name in ("cnn", "vit", "vit_b16"):
        paths[name] = folder / f"{name}.keras"
        build_tiny(name).save(paths[name])
    return paths


@pytest.fixture(scope="module")
def loaded(saved_models):
    return load_models(saved_models.values())


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")


def compute_maps(models, images):
    """{f"{name}/{key}": array} for every {name: loaded model}, on this process's backend."""
    from kerasvit.explain import explanations

    maps = {}
    for name, model in models.items():
        result = explanations.explain_batch(model, name, images)
        for key in MAP_KEYS:
            if key in result:
                maps[f"{name}/{key}"] = np.asarray(result[key])
    return maps


def load_models(paths):
    from kerasvit.runs import loading

    return {Path(path).stem: loading.load_model(path) for path in paths}


# ---------------------------------------------------------------- attention

@pytest.mark.parametrize("name", ["vit", "vit_b16"])
def test_attention_rows_sum_to_one_and_maps_have_grid_shape(loaded, images, name):
    from kerasvit.explain import attention

    scores = attention.attention_scores(loaded[name], name, images)
    assert len(scores) == 2
    for layer_scores in scores:
        assert layer_scores.shape == (3, 2, 17, 17)  # 4x4 patches + class token
        np.testing.assert_allclose(layer_scores.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(attention.rollout(scores).sum(axis=-1), 1.0, atol=1e-5)
    assert attention.rollout_maps(scores, (4, 4)).shape == (3, 4, 4)
    assert attention.class_token_maps(scores, (4, 4)).shape == (3, 2, 4, 4)


def test_keras_hub_recomputation_matches_backbone(loaded, images):
    import keras

    from kerasvit.models.preset_graph import preset_parts
    from kerasvit.models.vit_b16 import keras_hub_vit_scores

    model = loaded["vit_b16"]  # saved as keras-hub's classifier, loaded as one graph
    tokens, _ = keras_hub_vit_scores(model, images)
    pixels_of, backbone, _ = preset_parts(model)
    expected = backbone(pixels_of(images))
    difference = np.abs(keras.ops.convert_to_numpy(tokens) - keras.ops.convert_to_numpy(expected))
    assert difference.max() < 1e-5


def test_rollout_mixes_in_the_residual_and_multiplies_layers():
    from kerasvit.explain.attention import rollout

    # Two tokens; every head of layer 1 sends token 0 entirely to token 1.
    swap = np.array([[0.0, 1.0], [0.0, 1.0]], dtype="float32")[None, None]
    one_layer = rollout([swap])
    np.testing.assert_allclose(one_layer[0], [[0.5, 0.5], [0.0, 1.0]], atol=1e-6)
    two_layers = rollout([swap, swap])
    np.testing.assert_allclose(two_layers[0], [[0.25, 0.75], [0.0, 1.0]], atol=1e-6)


# ---------------------------------------------------------------- Grad-CAM

def colour_detector():
    """Class 0 is "red", class 1 is "green": a 1x1 conv measures red-ness (R - G - B) and
    green-ness (G - R - B), global average pooling and a diagonal head. Grey pixels
    score 0 on both, so the class evidence is wherever the colour is."""
    import keras

    inputs = keras.Input((32, 32, 3))
    evidence = keras.layers.Conv2D(2, 1, activation="relu", name="evidence")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(evidence)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(pooled))
    kernel = np.array([[1, -1], [-1, 1], [-1, -1]], dtype="float32").reshape(1, 1, 3, 2)
    model.get_layer("evidence").set_weights([kernel, np.zeros(2, "float32")])
    model.get_layer("head").set_weights([np.eye(2, dtype="float32"), np.zeros(2, "float32")])
    return model


QUADRANTS = {0: (slice(0, 16), slice(0, 16)), 1: (slice(0, 16), slice(16, 32)),
             2: (slice(16, 32), slice(16, 32)), 3: (slice(16, 32), slice(0, 16))}


def coloured_image(red_quadrant):
    """Grey noise everywhere, a red square in one quadrant, a green one opposite."""
    grey = np.random.default_rng(red_quadrant).uniform(0, 255, (32, 32, 1))
    image = np.repeat(grey, 3, axis=-1).astype("float32")
    for quadrant, colour in ((red_quadrant, (255, 0, 0)), ((red_quadrant + 2) % 4, (0, 255, 0))):
        rows, columns = QUADRANTS[quadrant]
        image[rows.start + 4:rows.stop - 4, columns.start + 4:columns.stop - 4] = colour
    return image


@pytest.mark.parametrize("red_quadrant", [0, 1, 2, 3])
def test_gradcam_peaks_where_the_class_evidence_is(red_quadrant):
    from kerasvit.explain.gradcam import grad_cam

    model = colour_detector()
    image = coloured_image(red_quadrant)[None]
    for class_index, quadrant in ((0, red_quadrant), (1, (red_quadrant + 2) % 4)):
        heat = grad_cam(model, image, [class_index], "evidence")[0]
        peak = np.unravel_index(heat.argmax(), heat.shape)
        rows, columns = QUADRANTS[quadrant]
        assert rows.start <= peak[0] < rows.stop and columns.start <= peak[1] < columns.stop
        assert heat[rows, columns].sum() > 0.99 * heat.sum()


def test_gradcam_has_the_feature_map_shape_and_is_not_negative(loaded, images):
    from kerasvit.explain.gradcam import grad_cam
    from kerasvit.models import get_spec

    model = loaded["cnn"]  # loaded from .keras: the layer is found from the saved graph
    layer = get_spec("cnn").gradcam_layer(model)
    assert layer == "layout_out"  # the last feature map, NHWC in either layout
    heat = grad_cam(model, images, [0, 1, 2], layer)
    assert heat.shape == (3, *model.get_layer(layer).output.shape[1:3])
    assert heat.shape == (3, 3, 3)  # 32 -> 31 (2x2 whitening) -> 15 -> 7 -> 3
    assert heat.min() >= 0 and heat.max() > 0


# ---------------------------------------------------------------- every backend

def run_workers(backends, out_dir, images_path, model_paths):
    """Starts one worker per backend at once (each start costs 6-15 s), then waits."""
    # tests/ too: the worker runs this file as a script, which imports suite_passes.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    workers = {}
    for backend in backends:
        command = [sys.executable, __file__, str(out_dir / f"{backend}.npz"), str(images_path),
                   *map(str, model_paths)]
        workers[backend] = subprocess.Popen(
            command, env=dict(env, KERAS_BACKEND=backend), cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for backend, worker in workers.items():
        output, _ = worker.communicate(timeout=400)
        assert worker.returncode == 0, f"{backend} worker failed:\n{output[-3000:]}"
    return {backend: dict(np.load(out_dir / f"{backend}.npz")) for backend in backends}


@in_one_pass("one process compares its maps with both other backends' workers, so one pass "
             "covers all three")
def test_maps_are_the_same_on_every_backend(saved_models, loaded, images, backend, tmp_path):
    np.save(tmp_path / "images.npy", images)
    others = run_workers([b for b in BACKENDS if b != backend], tmp_path,
                         tmp_path / "images.npy", saved_models.values())
    here = compute_maps(loaded, images)
    report = {}
    for other, maps in others.items():
        assert set(maps) == set(here)
        for key, value in here.items():
            scale = 1.0 if key.endswith(("rollout", "layers", "predicted")) else value.max()
            report[f"{other}:{key}"] = float(np.abs(maps[key] - value).max() / scale)
    print(json.dumps({"backend": backend, "max_abs_diff": report}, indent=1))
    # Grad-CAM is compared relative to its peak (its scale is arbitrary); attention as is.
    assert max(report.values()) < 1e-4, report


# ---------------------------------------------------------------- CLI and function API

def fake_run(folder, model_name, model_path):
    folder.mkdir()
    (folder / "model.keras").write_bytes(Path(model_path).read_bytes())
    (folder / "config.json").write_text(json.dumps({"model": model_name}))
    return folder


def test_cli_explains_a_test_sample_into_the_run_folder(saved_models, tmp_path):
    from kerasvit.cli import explain

    run_dir = fake_run(tmp_path / "run", "cnn", saved_models["cnn"])
    index = explain.main([str(run_dir), "--num-images", "3"])
    figures = sorted((run_dir / "explain").glob("*.png"))
    assert index == run_dir / "explain.md" and len(figures) == 3
    text = index.read_text()
    assert all(f"explain/{figure.name}" in text for figure in figures)
    assert "test image" in text


def test_cli_explains_image_files_into_out(saved_models, tmp_path):
    from PIL import Image

    from kerasvit.cli import explain

    paths = []
    for index, size in enumerate((32, 50)):  # any size: resized to the model's input
        paths.append(tmp_path / f"photo{index}.png")
        pixels = np.random.default_rng(index).integers(0, 255, (size, size, 3), dtype="uint8")
        Image.fromarray(pixels).save(paths[-1])
    out = tmp_path / "out"
    explain.main([str(saved_models["vit"]), "--images", *map(str, paths), "--out", str(out)])
    figures = sorted(p.name for p in (out / "explain").glob("*.png"))
    assert [name.split("-")[1] for name in figures] == ["photo0", "photo1"]
    assert "photo1.png" in (out / "explain.md").read_text()


@pytest.mark.parametrize("arguments, message", [
    (["missing_run"], "does not exist"),
    (["{cnn}", "--class", "unicorn"], "unknown class 'unicorn'"),
    (["{vit}", "--class", "cat"], "--class applies to Grad-CAM"),
    (["{cnn}", "--images", "missing.png"], "image file missing.png does not exist"),
    (["{cnn}", "--num-images", "0"], "--num-images must be positive"),
    (["{cnn}", "--images", "{huge}"], "is 6000x5000 pixels (30 megapixels); explain takes up to 25"),
])
def test_cli_bad_input_is_one_line(saved_models, tmp_path, capsys, arguments, message):
    from cli_helpers import png_claiming

    from kerasvit.cli import explain

    huge = tmp_path / "huge.png"
    huge.write_bytes(png_claiming(6000, 5000))  # refused from its header, never decoded
    paths = {**{k: str(v) for k, v in saved_models.items()}, "huge": str(huge)}
    arguments = [a.format(**paths) for a in arguments]
    with pytest.raises(SystemExit) as exit_info:
        explain.main(arguments)
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert error.startswith("kerasvit.explain: error:") and message in error
    assert "\n" not in error


@pytest.mark.parametrize("name, method", [("cnn", "gradcam"), ("vit_b16", "attention")])
def test_explain_image_returns_an_overlay(loaded, name, method):
    from kerasvit import CLASS_NAMES
    from kerasvit.explain.explanations import explain_image

    photo = np.random.default_rng(1).integers(0, 255, (40, 48, 3), dtype="uint8")
    result = explain_image(loaded[name], photo, name, display_size=64)
    assert result["overlay"].shape == (64, 64, 3) and result["overlay"].dtype == np.uint8
    assert result["predicted_class"] in CLASS_NAMES and result["method"] == method
    assert result["heatmap"].shape == ((3, 3) if name == "cnn" else (4, 4))  # feature grids


if __name__ == "__main__":
    out_path, images_path, *paths = sys.argv[1:]
    np.savez(out_path, **compute_maps(load_models(paths), np.load(images_path)))
