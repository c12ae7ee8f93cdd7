"""One backend's share of `kerasvit.compare_backends`, run in a process of its own.

    KERAS_BACKEND=jax python -m kerasvit.compare.worker train SPEC.json
    KERAS_BACKEND=jax python -m kerasvit.compare.worker check SPEC.json

`train` trains and evaluates the configured model for each seed, timing it, and saves the
first seed's model with its logits on a few probe images. `check` loads every backend's
saved model on this backend and compares its predictions with the saving backend's.
Either way the result (or the one-line error) goes to the JSON file the spec names, and
the exit code is 0 only on success. The backend is fixed at `import keras`, which is why
each backend needs its own process.
"""

import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from kerasvit import models
from kerasvit.evaluation import classification


def main(argv=None):
    mode, spec_path = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(spec_path).read_text())
    try:
        result = MODES[mode](spec)
        result["status"] = "ok"
    except Exception as error:
        traceback.print_exc()  # Into the worker's log, for whoever needs the whole story.
        result = {"status": "failed", "error": error_line(error),
                  "user_error": is_user_error(error)}
    result["peak_rss_mb"] = peak_rss_mb()
    from kerasvit.runs import folders

    folders.write_json(spec["result_path"], result)
    return 0 if result["status"] == "ok" else 1


def error_line(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300]}" if text else type(error).__name__


def is_user_error(error):
    """Errors in the config or data request: the same on every backend, so the parent stops."""
    from kerasvit.config import ConfigError

    if isinstance(error, ConfigError):
        return True
    # Looked up, not imported: a worker that failed before loading data need not pay for
    # TensorFlow's import just to say so.
    cifar = sys.modules.get("kerasvit.data.cifar")
    return cifar is not None and isinstance(error, cifar.DataError)


def peak_rss_mb():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def train_mode(spec):
    from kerasvit.config import check_model_args, config_from_dict

    backend = os.environ["KERAS_BACKEND"]
    config = config_from_dict(spec["config"])
    import keras

    keras_imported = time.time()
    if keras.backend.backend() != backend:
        raise RuntimeError(f"keras runs on {keras.backend.backend()}, not {backend}")
    from kerasvit import models
    from kerasvit.runs import environment
    from kerasvit.training import precision, recipe

    check_model_args(config, models.get_spec(config.model).builder)
    precision = precision.set_precision(config.mixed_precision, backend)
    started = time.perf_counter()
    splits = load_splits(config, spec["test_images"])
    data_load_s = time.perf_counter() - started

    seed_runs, build_times = [], []
    for seed in spec["seeds"]:
        config.seed = seed
        keras.utils.set_random_seed(seed)
        started = time.perf_counter()
        model = models.build_model(config.model, **config.model_args)
        build_times.append(time.perf_counter() - started)
        seed_runs.append(train_and_evaluate(model, config, splits, backend))
        if len(seed_runs) == 1:
            save_reference(model, splits, spec)
        print(f"seed {seed}: test accuracy {seed_runs[-1]['test_accuracy']:.4f}", flush=True)

    import_s = keras_imported - spec["spawn_time"]
    return {
        "env": environment.collect_env(backend),
        "jit_compile": recipe.resolve_jit_compile(config.jit_compile, backend),
        "mixed_precision": precision["enabled"],
        "mixed_precision_reason": precision["reason"],
        "import_s": import_s,
        "build_s": build_times[0],  # The cold build; later ones reuse warm caches.
        "import_build_s": import_s + build_times[0],
        "data_load_s": data_load_s,
        "train_images": int(len(splits["train"][0])),
        "test_images": int(len(splits["test"][0])),
        **summarise_seeds(seed_runs),
    }


def load_splits(config, test_images):
    from kerasvit.data import cifar

    splits = cifar.load_splits(config.data_dir, config.validation_size, config.subset_per_class,
                               config.test_per_class)
    if test_images:
        images, labels = splits["test"]
        splits["test"] = (images[:test_images], labels[:test_images])
    return splits


def train_and_evaluate(model, config, splits, backend):
    """One seed: fit with step timing (no run-folder files, whose writes would only add
    noise), then the test set with batch timing."""
    from kerasvit.training import loop

    history, monitor = loop.fit(model, config, splits, backend)
    eval_timer = make_eval_timer()
    test = loop.evaluate_test(model, config, splits, callbacks=[eval_timer])
    val_history = history.history.get("val_accuracy") or [None]
    return {
        "first_step_s": monitor.first_step_s,
        "step_times": monitor.measured_steps(),
        "eval_batch_times": eval_timer.batch_times,
        "val_accuracy": val_history[-1],
        "test_accuracy": float(test["accuracy"]),
        "train_loss": float(history.history["loss"][-1]),
    }


def summarise_seeds(seed_runs):
    step_times = [t for run in seed_runs for t in run["step_times"]]
    eval_times = [t for run in seed_runs for t in run["eval_batch_times"]]
    return {
        # The cold start: the first seed's first step (later seeds reuse warm caches).
        "first_step_s": seed_runs[0]["first_step_s"],
        "median_step_s": float(np.median(step_times)) if step_times else None,
        "steps_measured": len(step_times),
        "median_eval_batch_s": float(np.median(eval_times)) if eval_times else None,
        "eval_batches_measured": len(eval_times),
        "val_accuracy": [run["val_accuracy"] for run in seed_runs],
        "test_accuracy": [run["test_accuracy"] for run in seed_runs],
        "train_loss": [run["train_loss"] for run in seed_runs],
    }


def save_reference(model, splits, spec):
    """Saves the model, the probe images and this backend's logits on them, for `check`."""
    from kerasvit.data import stream
    from kerasvit.runs import folders

    out = Path(spec["model_dir"])
    folders.save_model(model, out / "model.keras")
    probe = splits["test"][0][: spec["probe_images"]]
    np.save(out / "probe_images.npy", probe)
    images = stream.prepare_images(probe, models.feed_size(model, probe.shape[1:3]))
    np.save(out / "probe_logits.npy", np.asarray(model.predict(images, verbose=0), "float32"))


def check_mode(spec):
    """Loads each saved model here and compares its probabilities with the saver's own."""
    import keras

    from kerasvit.runs import loading

    checks = {}
    for saved_by, model_dir in spec["model_dirs"].items():
        model_dir = Path(model_dir)
        try:
            model = loading.load_model(model_dir / "model.keras")
            probe = np.load(model_dir / "probe_images.npy")
            images = prepare_probe(probe, models.feed_size(model, probe.shape[1:3]))
            logits = np.asarray(model.predict(images, verbose=0), "float32")
            reference = np.load(model_dir / "probe_logits.npy")
            checks[saved_by] = {
                "max_abs_prob_diff": float(np.abs(classification.softmax(logits)
                                                  - classification.softmax(reference)).max()),
                "top1_agreement": float(np.mean(logits.argmax(1) == reference.argmax(1))),
            }
        except Exception as error:
            traceback.print_exc()
            checks[saved_by] = {"error": error_line(error)}
        keras.backend.clear_session()
    return {"loaded": checks}


def prepare_probe(images, image_size):
    if tuple(images.shape[1:3]) == tuple(image_size):
        return images.astype("float32")
    # Only resizing needs the tf.data module, whose TensorFlow import costs seconds.
    from kerasvit.data import stream

    return stream.prepare_images(images, image_size)



def make_eval_timer():
    """A callback timing evaluation batches (device synced, first batch left out); built
    here because keras may be imported only once the backend is set."""
    import keras

    class EvalTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.batch_times = []
            self.batches_seen = 0

        def on_test_batch_begin(self, batch, logs=None):
            self.batch_start = time.perf_counter()

        def on_test_batch_end(self, batch, logs=None):
            float(logs["loss"])  # Forces the batch to finish: async backends report early.
            self.batches_seen += 1
            if self.batches_seen > 1:
                self.batch_times.append(time.perf_counter() - self.batch_start)

    return EvalTimer()


MODES = {"train": train_mode, "check": check_mode}

if __name__ == "__main__":
    sys.exit(main())
