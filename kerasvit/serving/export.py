"""Exporting a trained model for serving: a TensorFlow SavedModel (TF Serving, TFLite) or an
ONNX file (onnxruntime, TensorRT), written on whichever backend KERAS_BACKEND names, then
checked against the `.keras` model it came from.

The check runs the artifact in its own runtime (TensorFlow for a SavedModel, onnxruntime for
ONNX) on real CIFAR-10 test images and reports the largest class-probability difference from
the `.keras` model, the artifact's size and its latency at batch 1 and 256 (the timing rule
of kerasvit.evaluation.timing). Everything lands in a new folder, never over an existing one:

    OUT/saved_model/        or  OUT/model.onnx
    OUT/export.json             (what was exported, parity, size, latency)

A model trained with mixed precision is exported in float32 (same weights): parity is
checked against that float32 model, and the bf16 model's difference is reported beside it.
Every artifact takes float32 images in [0, 255] of the model's input size, any batch size
(NHWC, as the `.keras` model does), and returns the 10 class logits.
"""

import contextlib
import importlib.util
import io
import logging
import shutil
import time
import warnings
from pathlib import Path

import numpy as np

from kerasvit import models
from kerasvit.errors import UserError, first_line

FORMATS = ("saved_model", "onnx")
ARTIFACT_NAMES = {"saved_model": "saved_model", "onnx": "model.onnx"}
# The ONNX converter each backend's export goes through (Keras' own choice, except torch,
# where we call torch.onnx's dynamo exporter, which keeps the batch size dynamic).
ONNX_CONVERTERS = {"tensorflow": "tf2onnx", "jax": "jax2onnx", "torch": "onnxscript"}
ONNX_OPSET = 18  # tf2onnx 1.17 writes opsets up to 18; onnxruntime 1.32 runs up to 23
PARITY_TOLERANCE = 1e-4  # largest class-probability difference still called the same
LATENCY_BATCHES = (1, 256)
EXPORT_HINT = "pip install 'kerasvit[export]'"


class ExportError(UserError, RuntimeError):
    """The model cannot be exported or checked as asked; shown as one line."""


def default_out(model_path, run_dir, format):
    """<run>/export_<format>, or <file>_<format>/ beside a lone .keras file."""
    if run_dir is not None:
        return Path(run_dir) / f"export_{format}"
    return Path(model_path).with_name(f"{Path(model_path).stem}_{format}")


def check_can_export(format, backend):
    """What can be refused before keras is imported: a format this backend cannot write,
    or packages that are not installed."""
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if format == "saved_model" and backend == "torch" and not installed("torch_xla"):
        raise ExportError(
            "a SavedModel cannot be written on torch: Keras converts through torch_xla, which "
            "has no build for this torch; run the same command with KERAS_BACKEND=tensorflow "
            "or jax (the .keras file loads under any backend)")
    if format == "onnx":
        missing = [name for name in ("onnx", "onnxruntime", ONNX_CONVERTERS[backend])
                   if not installed(name)]
        if missing:
            raise ExportError(f"ONNX export on {backend} needs {', '.join(missing)} (not "
                              f"installed); {EXPORT_HINT}")


def installed(module):
    return importlib.util.find_spec(module) is not None


def check_out(out):
    if Path(out).exists():
        raise ExportError(f"{out} already exists; an export never overwrites one: pass "
                          "another --out or remove it")


# ------------------------------------------------------------------ writing the artifact

def float32_model(model):
    """The model itself when it computes in float32, else a float32 copy with the same
    weights (a run trained with --mixed-precision saves bf16 layer policies; ONNX needs
    float32, and serving should not depend on the CPU having bf16)."""
    import keras

    if all(layer.dtype_policy.compute_dtype == "float32" for layer in model._flatten_layers()):
        return model

    def to_float32(config):
        if isinstance(config, dict):
            if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
                return dict(config, config=dict(config.get("config", {}), name="float32"))
            return {key: to_float32(value) for key, value in config.items()}
        if isinstance(config, list):
            return [to_float32(value) for value in config]
        return config

    copy = keras.saving.deserialize_keras_object(
        to_float32(keras.saving.serialize_keras_object(model)))
    copy.set_weights(model.get_weights())
    return copy


def write_artifact(model, format, path, backend):
    """Writes the model as `format` to `path` with this backend's exporter."""
    if format == "saved_model":
        model.export(str(path), format="tf_saved_model", verbose=False)
    elif backend == "tensorflow":
        export_onnx_tensorflow(model, path)
    elif backend == "torch":
        export_onnx_torch(model, path)
    else:
        model.export(str(path), format="onnx", verbose=False, opset_version=ONNX_OPSET)
        from kerasvit.serving import onnx_fixes

        onnx_fixes.fix_onnx_file(path)


def input_spec_shape(model):
    """The exported input: a batch of float32 images at the model's image size (a preset
    model takes any size; its export is fixed at its preset's, which exporters handle)."""
    return (None, *models.image_size(model), int(model.input_shape[-1]))


def export_onnx_tensorflow(model, path):
    """tf2onnx on a traced call of the model, then the graph fixes it needs
    (kerasvit.serving.onnx_fixes): Keras' own route leaves the captured constants as inputs
    and an Erfc node onnxruntime cannot run."""
    import tensorflow as tf
    import tf2onnx

    from kerasvit.serving import onnx_fixes

    signature = [tf.TensorSpec(input_spec_shape(model), tf.float32, name="images")]
    function = tf.function(lambda images: model(images, training=False),
                           input_signature=signature)
    concrete = function.get_concrete_function()
    captured = {inner.name: outer.numpy() for inner, outer
                in zip(concrete.graph.internal_captures, concrete.captured_inputs)
                if outer.dtype != tf.resource}
    # tf2onnx logs every op it does not know as an error; the parity check is the judge.
    with quiet_logger("tf2onnx"):
        tf2onnx.convert.from_function(function, input_signature=signature, opset=ONNX_OPSET,
                                      output_path=str(path))
    onnx_fixes.fix_onnx_file(path, captured)


def export_onnx_torch(model, path):
    """torch.onnx's dynamo exporter with a dynamic batch dimension. Keras' own route asks
    for a dynamic batch through the TorchScript exporter, which fails on the ViT's layer
    norm, and its dynamo call cannot name the batch of a Keras model's `forward(*args)`."""
    import torch

    class Inference(torch.nn.Module):
        def __init__(self, wrapped):
            super().__init__()
            self.wrapped = wrapped

        def forward(self, images):
            return self.wrapped(images, training=False)

    sample = torch.zeros((2, *input_spec_shape(model)[1:]), dtype=torch.float32)
    module = Inference(model)
    module.train(False)  # inference mode (what .eval() does)
    with contextlib.redirect_stdout(io.StringIO()), quiet_logger("torch.onnx"), \
            warnings.catch_warnings():
        # torch.export's own deprecation notices (pytree LeafSpec, ...) are not the user's.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        program = torch.onnx.export(
            module, (sample,), dynamo=True, input_names=["images"],
            output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
            opset_version=ONNX_OPSET, verbose=False)
        program.optimize()
        program.save(str(path))


@contextlib.contextmanager
def quiet_logger(name):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def artifact_size(path):
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


# ------------------------------------------------------------------ running the artifact

class SavedModelRunner:
    """A SavedModel's `serve` endpoint run by TensorFlow, with predict_on_batch's interface
    (what kerasvit.evaluation.timing times)."""
    runtime = "tensorflow"

    def __init__(self, path):
        import tensorflow as tf

        self.tf = tf
        self.loaded = tf.saved_model.load(str(path))

    def predict_on_batch(self, images):
        return self.loaded.serve(self.tf.constant(images)).numpy()


class OnnxRunner:
    """An ONNX file run by onnxruntime on the CPU."""
    runtime = "onnxruntime"

    def __init__(self, path):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: no notes on the graph optimisations
        self.session = onnxruntime.InferenceSession(str(path), options,
                                                    providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def predict_on_batch(self, images):
        return self.session.run(None, {self.input_name: images})[0]


RUNNERS = {"saved_model": SavedModelRunner, "onnx": OnnxRunner}


def run_in_batches(runner, images, batch_size=256):
    return np.concatenate([np.asarray(runner.predict_on_batch(images[start:start + batch_size]),
                                      dtype=np.float32)
                           for start in range(0, len(images), batch_size)])


def parity(model, runner, images):
    """Largest class-probability difference between a Keras model and the artifact, and
    how often their top-1 classes agree."""
    from kerasvit.evaluation import classification

    expected = classification.softmax(run_in_batches(model, images))
    got = classification.softmax(run_in_batches(runner, images))
    return {
        "test_images": int(len(images)),
        "max_probability_difference": float(np.abs(expected - got).max()),
        "top1_agreement": float(np.mean(expected.argmax(1) == got.argmax(1))),
        "tolerance": PARITY_TOLERANCE,
    }


def latencies(runner, images, repeats):
    """Median milliseconds of one call at each of LATENCY_BATCHES."""
    from kerasvit.evaluation import timing

    result = {}
    for batch_size in LATENCY_BATCHES:
        seconds, _ = timing.median_call_seconds(runner, images[:batch_size], repeats)
        result[f"batch_{batch_size}"] = 1000.0 * seconds
    return result


# ------------------------------------------------------------------ the whole export

def export(source, format, backend, out=None, test_images=1000, timing_repeats=10,
           data_dir=None, unsafe_load=False):
    """Exports a run folder's (or `.keras` file's) model as `format` into a new folder and
    checks it; returns (folder, the export.json dict). timing_repeats=0 skips the latency."""
    from kerasvit.data import cifar, stream
    from kerasvit.runs import environment, folders, loading

    model, config, run_dir = loading.load_run(source, unsafe_load)
    model_path, _ = loading.resolve_model_path(source)
    out = Path(out) if out else default_out(model_path, run_dir, format)
    check_out(out)
    pixels, _ = cifar.load_test_images(cifar.resolve_data_dir(data_dir or ""),
                                       max(test_images, max(LATENCY_BATCHES)))
    images = np.asarray(stream.prepare_images(pixels, models.image_size(model)), np.float32)

    exported = float32_model(model)
    exported(images[:2], training=False)  # Keras exports only models that have been called
    partial = folders.partial_path(out)
    shutil.rmtree(partial, ignore_errors=True)  # left by an export that was killed
    partial.mkdir(parents=True)
    try:
        artifact = partial / ARTIFACT_NAMES[format]
        started = time.perf_counter()
        try:
            write_artifact(exported, format, artifact, backend)
        except Exception as error:
            raise ExportError(f"{label(format)} export failed on {backend}: "
                              f"{first_line(error)}; try another backend (KERAS_BACKEND=...): "
                              "the .keras file loads under any backend") from None
        export_seconds = time.perf_counter() - started
        try:
            runner = RUNNERS[format](artifact)
            # Against the float32 model it was made from: a bf16 model's own rounding
            # (~1e-3 in probability) is not the export's error; it is reported beside.
            checked = parity(exported, runner, images[:test_images])
            if exported is not model:
                checked["mixed_precision_model_max_probability_difference"] = parity(
                    model, runner, images[:test_images])["max_probability_difference"]
        except Exception as error:
            raise ExportError(f"the {label(format)} artifact written on {backend} does not run "
                              f"in {RUNNERS[format].runtime} ({first_line(error)}); try "
                              "another backend (KERAS_BACKEND=...): the .keras file loads "
                              "under any backend") from None
        report = {
            "format": format,
            "artifact": ARTIFACT_NAMES[format],
            "source": str(run_dir or model_path),
            "model": loading.model_name(model, config),
            "backend": backend,
            "runtime": runner.runtime,
            "input": {"shape": list(input_spec_shape(model)), "dtype": "float32",
                      "range": "[0, 255]", "output": "class logits"},
            "converted_to_float32": exported is not model,
            "size_bytes": artifact_size(artifact),
            "export_seconds": export_seconds,
            "parity": checked,
            # timing_repeats=0 skips the timing (tests that check predictions only).
            "latency_ms": latencies(runner, images, timing_repeats) if timing_repeats else None,
            "keras_latency_ms": (latencies(model, images, timing_repeats) if timing_repeats
                                 else None),
            "timing_method": (f"median of up to {timing_repeats} calls per batch size after "
                              f"{WARMUP_NOTE}; artifact in {runner.runtime}, `.keras` model "
                              f"with predict_on_batch on {backend}; CPU: "
                              f"{environment.cpu_model()}"),
            "versions": environment.package_versions(),
        }
        folders.write_json(partial / "export.json", report)
        check_out(out)
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out, report


WARMUP_NOTE = "2 warm-up calls, on in-memory CIFAR-10 test images"


def label(format):
    return {"saved_model": "SavedModel", "onnx": "ONNX"}[format]


def summary(out, report):
    """What the command prints: where, parity, size and latency, one line each."""
    checked = report["parity"]
    latency, keras_latency = report["latency_ms"] or {}, report["keras_latency_ms"] or {}
    same = checked["max_probability_difference"] <= checked["tolerance"]
    lines = [
        f"exported {report['model']} as {label(report['format'])} on {report['backend']}: "
        f"{Path(out) / report['artifact']} ({report['size_bytes'] / 1e6:.2f} MB)",
        f"parity ({report['runtime']} vs the .keras model, {checked['test_images']:,} CIFAR-10 "
        f"test images): max probability difference {checked['max_probability_difference']:.2e} "
        f"({'within' if same else 'ABOVE'} {checked['tolerance']:.0e}), top-1 agreement "
        f"{100 * checked['top1_agreement']:.1f}%",
        "latency (median ms): " + (", ".join(
            f"batch {size}: {latency[f'batch_{size}']:.2f} (keras "
            f"{keras_latency[f'batch_{size}']:.2f})" for size in LATENCY_BATCHES)
            if latency else "not measured"),
        f"wrote {Path(out) / 'export.json'}",
    ]
    if report["converted_to_float32"]:
        lines.insert(2, "the model computes in bf16 (mixed precision): exported and checked as "
                     "float32 with the same weights; vs the bf16 model: max probability "
                     f"difference {checked['mixed_precision_model_max_probability_difference']:.2e}")
    return "\n".join(lines)
