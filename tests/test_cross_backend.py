"""A model trained under this process's backend, loaded and evaluated under the other two
(in subprocesses with another KERAS_BACKEND): same predictions (max abs difference of
probabilities <= 1e-4) and the same test accuracy. Also a cnn computing in channels_first
(as it does on torch), saved by kerasvit: the other backends load and run it the same, TF
without oneDNN too (as on CPUs without AVX-512, whose TF convolutions have no NCHW kernels).

The subprocess loads the file with a plain `keras.saving.load_model` after `import kerasvit`,
as a user's script would: that checks the custom-layer registration and Keras' safe mode.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from trained_run import tiny_vit_run

from kerasvit import cli
from kerasvit.data import cifar
from kerasvit.evaluation import classification
from kerasvit.models.cnn import build_cnn
from kerasvit.models.cnn_layers import adapt_whitening_layers
from kerasvit.runs import folders, loading

REPO_ROOT = Path(__file__).resolve().parent.parent
NUM_IMAGES = 500
TOLERANCE = 1e-4

# Runs in the other backend: plain Keras loading, then the evaluate CLI on the same images.
CHILD_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import kerasvit  # registers the custom layers for plain keras loading
    import keras
    from kerasvit.cli import evaluate
    from kerasvit.evaluation import classification

    model_path, images_path, out_dir, cnn_path = sys.argv[1:5]
    model = keras.saving.load_model(model_path, compile=False)  # safe_mode defaults to True
    logits = model.predict(np.load(images_path), verbose=0)
    np.save(out_dir + "/probabilities.npy", classification.softmax(keras.ops.convert_to_numpy(logits)))
    cnn = keras.saving.load_model(cnn_path, compile=False)
    np.save(out_dir + "/cnn_logits.npy", keras.ops.convert_to_numpy(cnn.predict(np.load(images_path), verbose=0)))
    evaluate.main([model_path, "--out", out_dir, "--test-images", str(len(np.load(images_path))),
                   "--timing-repeats", "1", "--batch-size", "250"])
""")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return tiny_vit_run(tmp_path_factory.getbasetemp())


def other_backends():
    return [name for name in cli.BACKENDS if name != os.environ["KERAS_BACKEND"]]


@pytest.fixture(scope="session")
def channels_first_cnn(cifar_splits, tmp_path_factory):
    """A tiny cnn in channels_first, its whitening set from real images, saved as a run's
    model.keras is."""
    images = cifar_splits["train"][0].astype("float32")
    model = build_cnn(widths=(8, 16, 16), data_format="channels_first")
    adapt_whitening_layers(model, images, seed=0, num_images=100)
    path = tmp_path_factory.mktemp("cnn_channels_first") / "model.keras"
    folders.save_model(model, path)
    return path


@pytest.fixture(scope="session")
def cross_backend_results(tiny_run, channels_first_cnn, tmp_path_factory):
    """Starts one child per other backend (in parallel: each mostly waits on imports) and
    returns {backend: folder with its probabilities.npy and metrics.json}."""
    work = tmp_path_factory.mktemp("cross_backend")
    images, _ = cifar.load_cifar10(cifar.resolve_data_dir())["test"]
    np.save(work / "images.npy", images[:NUM_IMAGES].astype("float32"))
    children = {}
    for backend in other_backends():
        out = work / backend
        out.mkdir()
        env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO_ROOT),
               "TF_ENABLE_ONEDNN_OPTS": "0"}  # TF's own CPU kernels: NHWC only
        children[backend] = (out, subprocess.Popen(
            [sys.executable, "-c", CHILD_SCRIPT, str(tiny_run / "model.keras"),
             str(work / "images.npy"), str(out), str(channels_first_cnn)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    results = {}
    for backend, (out, child) in children.items():
        output, _ = child.communicate(timeout=300)
        assert child.returncode == 0, f"{backend} child failed:\n{output[-3000:]}"
        results[backend] = out
    return results


@pytest.fixture(scope="session")
def own_probabilities(tiny_run):
    images, labels = cifar.load_cifar10(cifar.resolve_data_dir())["test"]
    model = loading.load_model(tiny_run)
    logits = model.predict(images[:NUM_IMAGES].astype("float32"), verbose=0)
    return classification.softmax(logits), labels[:NUM_IMAGES]


@pytest.mark.parametrize("other", other_backends())
def test_same_probabilities_on_other_backend(other, cross_backend_results, own_probabilities):
    probabilities, _ = own_probabilities
    theirs = np.load(cross_backend_results[other] / "probabilities.npy")
    difference = float(np.max(np.abs(theirs - probabilities)))
    print(f"{os.environ['KERAS_BACKEND']} -> {other}: max abs probability difference "
          f"{difference:.2e} over {NUM_IMAGES} images")
    assert difference <= TOLERANCE
    assert np.array_equal(np.argmax(theirs, axis=-1), np.argmax(probabilities, axis=-1))


@pytest.mark.parametrize("other", other_backends())
def test_same_accuracy_from_evaluate_on_other_backend(other, cross_backend_results,
                                                      own_probabilities):
    probabilities, labels = own_probabilities
    evaluation = json.loads((cross_backend_results[other] / "metrics.json").read_text())["evaluation"]
    assert evaluation["backend"] == other
    assert evaluation["trained_backend"] == os.environ["KERAS_BACKEND"]
    assert evaluation["test_images"] == NUM_IMAGES
    own = classification.classification_metrics(labels, probabilities, [str(i) for i in range(10)])
    assert evaluation["accuracy"] == own["accuracy"]
    assert evaluation["top5_accuracy"] == own["top5_accuracy"]
    assert evaluation["confusion_matrix"] == own["confusion_matrix"]


@pytest.mark.parametrize("other", other_backends())
def test_channels_first_cnn_runs_the_same_on_other_backend(other, cross_backend_results,
                                                           channels_first_cnn):
    import keras

    images = cifar.load_cifar10(cifar.resolve_data_dir())["test"][0][:NUM_IMAGES]
    model = keras.saving.load_model(channels_first_cnn, compile=False)
    own = keras.ops.convert_to_numpy(model.predict(images.astype("float32"), verbose=0))
    theirs = np.load(cross_backend_results[other] / "cnn_logits.npy")
    assert own.std(axis=0).min() > 1e-2  # logits that differ from image to image
    np.testing.assert_allclose(theirs, own, rtol=1e-3, atol=1e-4)
