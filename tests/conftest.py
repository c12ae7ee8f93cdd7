"""Shared fixtures. Tests run on whichever backend KERAS_BACKEND names (one pytest process
per backend), on the CPU, with the offline CIFAR-10 copy when it is beside the repo."""

import os
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "tensorflow_datasets"

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "TFDS_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["TFDS_DATA_DIR"] = str(SHARED_DATA)


def pytest_report_header(config):
    return f"KERAS_BACKEND={os.environ['KERAS_BACKEND']} TFDS_DATA_DIR={os.environ.get('TFDS_DATA_DIR')}"


@pytest.fixture(autouse=True)
def float32_policy_after_each_test():
    """Code under test that sets the global dtype policy (kerasvit.train.main run in this
    process, whose --mixed-precision auto turns bf16 on where the CPU has it) must not
    leave it set for the next test."""
    yield
    if "keras" in sys.modules:
        sys.modules["keras"].mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session")
def backend():
    return os.environ["KERAS_BACKEND"]


@pytest.fixture(scope="session")
def requires_channels_first():
    """Skips where this backend cannot compute channels_first convolutions: TensorFlow on a
    CPU without oneDNN (no AVX-512) has no NCHW Conv2D kernel. kerasvit never computes in
    channels_first there (its "auto" layout is channels_last on TF, and model.keras is
    always channels_last); the jax and torch passes cover the layout, and
    tests/test_cross_backend.py loads a channels_first-trained cnn into TF with oneDNN off."""
    import keras
    import numpy as np

    try:
        keras.layers.Conv2D(1, 1, data_format="channels_first")(np.zeros((1, 1, 2, 2), "float32"))
    except Exception as error:  # TF's UnimplementedError; any backend that cannot
        pytest.skip(f"{os.environ['KERAS_BACKEND']} cannot run an NCHW convolution on this "
                    f"CPU ({type(error).__name__}): channels_first is tested in the other passes")


@pytest.fixture(scope="session")
def cifar_splits():
    """Real CIFAR-10: 20 training images per class, 500 validation, the 10k test set."""
    from kerasvit.data import cifar

    try:
        return cifar.load_splits(validation_size=500, subset_per_class=20)
    except cifar.DataError as error:
        pytest.fail(f"CIFAR-10 is needed for these tests: {error}")


@pytest.fixture(scope="session")
def cifar_batch(cifar_splits):
    """200 real training images (float32, [0, 255]) with integer labels."""
    images, labels = cifar_splits["train"]
    return images.astype("float32"), labels


@pytest.fixture(scope="session")
def tiny_cnn_run(tmp_path_factory):
    """One unbroken 3-epoch tiny CNN run through the CLI, made once per pytest process: the
    CLI tests check its folder, the kill/resume tests compare their runs with it.
    Returns (working folder, CompletedProcess, run folder)."""
    from cli_helpers import TINY_TRAIN_FLAGS, run_train

    cwd = tmp_path_factory.mktemp("cli")
    result = run_train(TINY_TRAIN_FLAGS, cwd)
    (run_dir,) = (cwd / "runs").iterdir()
    return cwd, result, run_dir


@pytest.fixture(scope="session")
def reference_run(tiny_cnn_run):
    """The unbroken tiny run's folder (the bad-input, resume and property tests use it)."""
    return tiny_cnn_run[2]


def code_that_creates(marker):
    # A closure, not a default argument: Keras 3.15 cannot load a lambda's defaults.
    return lambda t: (open(marker, "a").close(), t / 255.0)[1]


@pytest.fixture(scope="session")
def lambda_model(tmp_path_factory):
    """A small .keras model with a Lambda layer named 'code' whose Python function, when
    run, creates the file `marker`: proof of whether loading ran the code."""
    import keras

    folder = tmp_path_factory.mktemp("lambda")
    marker = folder / "code-ran"
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(code_that_creates(str(marker)), name="code")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    path = folder / "lambda.keras"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns that lambdas are unsafe: that's the point
        model.save(path)
    marker.unlink()  # it ran while the model was built
    return path, marker
