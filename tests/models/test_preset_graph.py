"""Preset models as one graph from raw pixels (kerasvit.models.preset_graph), on tiny random
presets: a 224-px ViT (ViT-B/16's patches, one narrow block) and the 40-px ResNet, both with
per-channel ImageNet normalisation. The graph must predict what keras-hub's PipelineModel
(its converter outside the graph) predicts for the same weights, for uint8 and float images
of any size; carry its Resizing and Rescaling layers in `.keras`; load on the other backends;
load runs saved the old way; and fine-tune and explain through the CLI."""

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from tiny_presets import IMAGE_SIZES, IMAGENET_OFFSET, IMAGENET_SCALE, save_tiny_preset

from kerasvit import cli, models
from kerasvit.models import preset_graph, pretrained
from kerasvit.runs import loading

REPO_ROOT = Path(__file__).resolve().parents[2]
FAMILIES = ("vit224", "resnet")
# Two sizes that are not the presets' (the model resizes), one of them not square (the
# converter crops to the aspect ratio first; the Resizing layer must too).
SIZES = ((32, 32), (45, 30))


@pytest.fixture(scope="module")
def presets(tmp_path_factory, cifar_splits):
    folder = tmp_path_factory.mktemp("presets")
    images = cifar_splits["test"][0][:100].astype("float32")
    for family in FAMILIES:
        save_tiny_preset(family, folder / family, images)
    return {family: str(folder / family) for family in FAMILIES}


def pipeline_and_graph(preset, finetune="full"):
    """keras-hub's classifier (the old model) and the one-graph model on the same weights."""
    keras.utils.set_random_seed(0)
    classifier = pretrained.load_pipeline_model(preset, finetune, 10, 0.0)
    return classifier, preset_graph.from_pipeline_model(classifier, name="pretrained")


def pixels(size, count=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, *size, 3)).astype("uint8")


@pytest.mark.parametrize("family", FAMILIES)
def test_uint8_and_float_images_of_any_size_give_the_pipeline_models_logits(family, presets):
    classifier, model = pipeline_and_graph(presets[family])
    assert model.input_shape == (None, None, None, 3)
    assert models.image_size(model) == IMAGE_SIZES[family]
    for size in SIZES:
        images = pixels(size)
        old = classifier.predict(images.astype("float32"), verbose=0)  # converter on the host
        for given in (images, images.astype("float32")):
            logits = model.predict(given, verbose=0)
            assert logits.dtype == np.float32 and logits.shape == (4, 10)
            np.testing.assert_allclose(logits, old, atol=1e-5, err_msg=f"{size} {given.dtype}")
        np.testing.assert_allclose(keras.ops.convert_to_numpy(model.predict_on_batch(images)),
                                   old, atol=1e-5)
    assert np.abs(old).max() > 1e-3  # not a model that answers zeros whatever comes in


def preprocessing_configs(model):
    """{class name: config} of the model's Resizing and Rescaling layers."""
    return {type(layer).__name__: layer.get_config() for layer in model.layers
            if isinstance(layer, (keras.layers.Resizing, keras.layers.Rescaling))}


def test_the_saved_graph_holds_the_preprocessing_layers(presets, tmp_path):
    _, model = pipeline_and_graph(presets["vit224"])
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    configs = preprocessing_configs(loaded)
    assert configs["Resizing"]["height"] == 224 and configs["Resizing"]["width"] == 224
    assert configs["Resizing"]["interpolation"] == "bilinear"
    np.testing.assert_allclose(configs["Rescaling"]["scale"], IMAGENET_SCALE, rtol=1e-6)
    np.testing.assert_allclose(configs["Rescaling"]["offset"], IMAGENET_OFFSET, rtol=1e-6)
    assert all(config["dtype"]["config"]["name"] == "float32" for config in configs.values())
    images = pixels((32, 32))
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               model.predict(images, verbose=0), atol=1e-6)


def test_mixed_precision_keeps_the_pixels_and_logits_in_float32(presets):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        _, model = pipeline_and_graph(presets["vit224"])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer(preset_graph.RESIZING).compute_dtype == "float32"
    assert model.get_layer(preset_graph.RESCALING).compute_dtype == "float32"
    assert preset_graph.backbone_of(model).compute_dtype == "bfloat16"
    assert model.predict(pixels((32, 32)), verbose=0).dtype == np.float32


@pytest.fixture(scope="module")
def old_style_file(presets, tmp_path_factory):
    """A .keras file as runs saved it before the change (keras-hub's classifier), the
    classifier's logits on 32x32 images and on 45x30 ones."""
    folder = tmp_path_factory.mktemp("old")
    classifier, _ = pipeline_and_graph(presets["vit224"])
    path = folder / "model.keras"
    classifier.save(path)
    images = {size: pixels(size) for size in SIZES}
    for size, batch in images.items():
        np.save(folder / f"images-{size[0]}x{size[1]}.npy", batch)
        np.save(folder / f"logits-{size[0]}x{size[1]}.npy",
                classifier.predict(batch.astype("float32"), verbose=0))
    return path


def test_an_old_pipeline_model_file_loads_as_one_graph_and_predicts_the_same(old_style_file):
    model = loading.load_model(old_style_file)
    assert preset_graph.is_preset_graph(model) and not hasattr(model, "preprocessor")
    assert loading.model_name(model) == "vit_b16"  # a ViT classifier, as before
    folder = old_style_file.parent
    for height, width in SIZES:
        images = np.load(folder / f"images-{height}x{width}.npy")
        np.testing.assert_allclose(model.predict(images, verbose=0),
                                   np.load(folder / f"logits-{height}x{width}.npy"), atol=1e-5)


def test_a_backup_the_old_classifier_wrote_resumes_into_the_one_graph(presets, tmp_path):
    """--resume of a run killed before the change: its backup holds keras-hub classifier
    weights and optimizer state; the run now rebuilds the one-graph model and restores them."""
    from kerasvit import config as kerasvit_config
    from kerasvit.training import checkpoint, recipe

    config = kerasvit_config.load_config_file(kerasvit_config.config_path_for_model("vit_b16"))
    backend = keras.backend.backend()
    old, old_graph = pipeline_and_graph(presets["vit224"])  # the graph shares old's weights
    recipe.compile_model(old, config, 10, backend)
    images = pixels((32, 32)).astype("float32")
    old.fit(images, keras.utils.to_categorical(np.arange(4), 10), epochs=1, verbose=0)
    checkpoint.save_backup(old, tmp_path / "backup", epochs_done=1)
    keras.utils.set_random_seed(1)  # another head than the old model's
    new = pretrained.build_pretrained(preset=presets["vit224"])
    recipe.compile_model(new, config, 10, backend)
    trained = old_graph.predict(images, verbose=0)
    assert np.abs(new.predict(images, verbose=0) - trained).max() > 1e-3

    assert checkpoint.restore_backup(new, tmp_path / "backup") == 1
    np.testing.assert_allclose(new.predict(images, verbose=0), trained, atol=1e-5)
    assert int(keras.ops.convert_to_numpy(new.optimizer.iterations)) == 1


# Loads each file on another backend, as kerasvit's CLIs do, and predicts 32x32 uint8 images.
CHILD_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import keras
    from kerasvit.models import preset_graph
    from kerasvit.runs import loading
    images = np.load(sys.argv[1])
    for path in sys.argv[2:]:
        model = loading.load_model(path)
        assert preset_graph.is_preset_graph(model), path
        np.save(path + "." + keras.backend.backend() + ".npy",
                keras.ops.convert_to_numpy(model.predict(images, verbose=0)))
""")


def test_new_and_old_files_predict_the_same_on_the_other_backends(presets, old_style_file,
                                                                    tmp_path):
    _, model = pipeline_and_graph(presets["vit224"])
    new_file = tmp_path / "new.keras"
    model.save(new_file)
    images_path = old_style_file.parent / "images-32x32.npy"
    own = {new_file: model.predict(np.load(images_path), verbose=0),
           old_style_file: np.load(old_style_file.parent / "logits-32x32.npy")}
    children = {}
    for other in (name for name in cli.BACKENDS if name != os.environ["KERAS_BACKEND"]):
        env = {**os.environ, "KERAS_BACKEND": other, "PYTHONPATH": str(REPO_ROOT)}
        children[other] = subprocess.Popen(
            [sys.executable, "-c", CHILD_SCRIPT, str(images_path), str(new_file),
             str(old_style_file)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
    for other, child in children.items():
        output, _ = child.communicate(timeout=300)
        assert child.returncode == 0, f"{other} child failed:\n{output[-3000:]}"
        for path, logits in own.items():
            np.testing.assert_allclose(np.load(f"{path}.{other}.npy"), logits, atol=1e-4,
                                       err_msg=f"{path.name} on {other}")


def test_explain_and_the_linear_probe_reach_the_backbone(presets, cifar_batch):
    _, model = pipeline_and_graph(presets["vit224"], finetune="linear")
    pixels_of, backbone, head = preset_graph.preset_parts(model)
    assert backbone.trainable_weights == [] and [layer.name for layer in head] == ["predictions"]
    assert {id(w) for w in model.trainable_weights} == {id(w) for w in head[0].weights}
    images = cifar_batch[0][:2]
    assert keras.ops.convert_to_numpy(pixels_of(images)).shape == (2, 224, 224, 3)
    scores = pretrained.attention_scores(model, images)
    assert len(scores) == 1 and tuple(scores[0].shape) == (2, 2, 197, 197)  # 14x14 + class


def test_gradcam_finds_the_backbone_output_of_a_convolutional_preset(presets, cifar_batch):
    from kerasvit.explain.explanations import explain_batch

    _, model = pipeline_and_graph(presets["resnet"])
    result = explain_batch(model, "pretrained", cifar_batch[0][:2])
    assert result["method"] == "gradcam"
    assert result["gradcam"].shape == (2, *preset_graph.backbone_of(model).output.shape[1:3])
    assert np.all(np.isfinite(result["gradcam"])) and result["gradcam"].max() > 0


def epoch_losses(run_dir):
    with open(run_dir / "history.csv") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def saved_backbone_weights(run_dir):
    model = loading.load_model(run_dir)
    return [keras.ops.convert_to_numpy(w) for w in preset_graph.backbone_of(model).weights]


@pytest.mark.parametrize("finetune", ["full", "linear"])
def test_cli_finetunes_a_224_px_vit_and_explains_it(finetune, presets, tmp_path, backend):
    """50 CIFAR images at 32x32 go into the model, which resizes them to 224 itself; explain
    (once: its path is the same for both modes) maps the run's attention."""
    from cli_helpers import run_cli, run_train

    preset = presets["vit224"]
    run_train(["--model", "vit_b16", "--preset", preset, "--finetune", finetune,
               "--epochs", "3", "--subset-per-class", "5", "--batch-size", "25",
               "--learning-rate", "1e-2" if finetune == "linear" else "3e-3",
               "--set", "validation_size=50", "--set", "test_images=50",
               "--set", "warmup_epochs=0", "--set", "label_smoothing=0",
               "--mixed-precision", "off"], tmp_path)
    (run_dir,) = (tmp_path / "runs").iterdir()
    losses = epoch_losses(run_dir)
    assert losses[-1] < losses[0], losses
    preset_weights = [keras.ops.convert_to_numpy(w) for w in
                      preset_graph.backbone_of(pipeline_and_graph(preset)[1]).weights]
    unchanged = [np.array_equal(a, b) for a, b in
                 zip(preset_weights, saved_backbone_weights(run_dir))]
    assert all(unchanged) if finetune == "linear" else not any(unchanged), unchanged
    env = json.loads((run_dir / "env.json").read_text())
    assert env["jit_compile"]["setting"] == "auto"
    assert env["jit_compile"]["value"] == (backend == "jax")
    if finetune == "full":
        run_cli("explain", [str(run_dir), "--num-images", "2"], tmp_path)
        assert "rollout" in (run_dir / "explain.md").read_text().lower()
        assert len(list((run_dir / "explain").glob("*.png"))) >= 2
