"""One worker process of bench/throughput.py: holds the contenders of one group (one
backend; see bench/contenders.py) warm, and runs timed chunks when the parent says so.

    KERAS_BACKEND=jax python bench/worker.py SPEC.json

Protocol: one JSON command per line on stdin; one JSON reply per command on the file
descriptor that was stdout at start (everything the frameworks print goes to stderr, the
worker's log). Commands: setup, train {name, steps}, eval {name, steps},
pipeline {batches}, quit.
"""

import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def error_line(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:400]}" if text else type(error).__name__


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Worker:
    def __init__(self, spec):
        self.spec = spec
        self.contenders = {}   # name -> runner object
        self.failed = {}       # name -> error line

    # --- setup -----------------------------------------------------------------------
    def setup(self):
        kind = self.spec["kind"]
        if kind == "pipeline":
            return self.setup_pipeline()
        import numpy as np

        batches = dict(np.load(self.spec["batches_path"]))
        if kind == "native":
            return self.setup_native(batches)
        return self.setup_keras(batches)

    def setup_pipeline(self):
        from bench.pipeline_side import Pipeline

        self.pipeline = Pipeline(self.spec)
        shape = self.pipeline.write_batches(self.spec["batches_path"], self.spec["num_batches"],
                                            self.spec["model"] == "vit_b16")
        result = {"batches_shape": shape, **self.pipeline.info()}
        if self.spec["measure_pipeline"]:
            warm = self.pipeline.measure(max(self.spec["pipeline_batches"] // 2, 2))
            result["warmup"] = {"seconds": warm["seconds"], "batches": warm["batches"]}
        import tensorflow as tf

        result["versions"] = {"tensorflow": tf.__version__}
        return {"contenders": {"pipeline": {"status": "ok", **result}}}

    def setup_native(self, batches):
        import torch

        from bench import native_side

        device = native_side.pick_device(self.spec["device"])
        worker_info = {"device": str(device), **native_side.thread_info(),
                       "versions": {"torch": torch.__version__}}
        try:
            import transformers

            worker_info["versions"]["transformers"] = transformers.__version__
        except ImportError:
            pass

        def build(contender):
            return native_side.NativeContender(self.spec, contender, batches, device)

        return self.setup_each(build, worker_info)

    def setup_keras(self, batches):
        import keras

        from bench import keras_side

        backend = keras.backend.backend()
        if backend != self.spec["backend"]:
            raise RuntimeError(f"keras runs on {backend}, not {self.spec['backend']}")
        x = batches["x"]
        flat_x = x.reshape((-1,) + x.shape[2:])
        flat_y = batches["y"].reshape((-1,) + batches["y"].shape[2:])
        if self.spec.get("keras_data") == "pipeline":
            # End to end: kerasvit's real augmented pipeline feeds fit, as in kerasvit.train.
            from bench.pipeline_side import Pipeline

            dataset = Pipeline(self.spec).dataset
        else:
            dataset = keras_side.make_dataset(flat_x, flat_y, self.spec["batch_size"])
        eval_batches = list(x)
        worker_info = {"versions": {"keras": keras.__version__}, **backend_info(backend)}

        def build(contender):
            return keras_side.KerasContender(self.spec, contender, dataset, eval_batches, backend)

        return self.setup_each(build, worker_info)

    def setup_each(self, build, worker_info):
        """Builds each contender, then warms it up: `warmup` training steps (the first one
        compiles) and `eval_warmup` evaluation batches, none of them counted."""
        results = {}
        for contender in self.spec["contenders"]:
            name = contender["name"]
            started = time.perf_counter()
            try:
                runner = build(contender)
                build_s = time.perf_counter() - started
                warm_train = runner.train(self.spec["warmup"])
                warm_eval = runner.evaluate(self.spec["eval_warmup"])
                self.contenders[name] = runner
                results[name] = {"status": "ok", "build_s": build_s,
                                 "first_step_s": warm_train[0] if warm_train else None,
                                 "warmup_step_s": warm_train,
                                 "first_eval_s": warm_eval[0] if warm_eval else None,
                                 **runner.info()}
            except Exception as error:  # one contender failing must not stop the others
                traceback.print_exc()
                self.failed[name] = error_line(error)
                results[name] = {"status": "failed", "error": error_line(error)}
            print(f"[setup] {name}: {results[name]['status']}", file=sys.stderr, flush=True)
        return {"contenders": results, "worker": worker_info}

    # --- timed chunks ----------------------------------------------------------------
    def train(self, name, steps):
        return {"times": self.contenders[name].train(steps)}

    def evaluate(self, name, steps):
        return {"times": self.contenders[name].evaluate(steps)}

    def measure_pipeline(self, batches):
        return self.pipeline.measure(batches)

    def handle(self, command):
        cmd = command["cmd"]
        if cmd == "setup":
            return self.setup()
        if cmd == "train":
            return self.train(command["name"], command["steps"])
        if cmd == "eval":
            return self.evaluate(command["name"], command["steps"])
        if cmd == "pipeline":
            return self.measure_pipeline(command["batches"])
        if cmd == "quit":
            return {}
        raise ValueError(f"unknown command {cmd!r}")


def backend_info(backend):
    info = {}
    try:
        import keras

        info["devices"] = [str(d) for d in keras.distribution.list_devices()]
    except Exception:
        info["devices"] = ["cpu:0"]
    if backend == "torch":
        from bench.native_side import thread_info

        info.update(thread_info())
    elif backend == "tensorflow":
        import tensorflow as tf

        info["tf_intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
        info["tf_inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
        info["onednn"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on for x86)")
    elif backend == "jax":
        import jax

        info["xla_flags"] = os.environ.get("XLA_FLAGS", "")
        info["jax_version"] = jax.__version__
    return info


def main():
    spec = json.loads(Path(sys.argv[1]).read_text())
    # Replies go to the original stdout; anything else written to fd 1 (framework chatter)
    # goes to stderr, the worker's log.
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    worker = Worker(spec)
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        try:
            reply = {"ok": True, **worker.handle(command)}
        except Exception as error:
            traceback.print_exc()
            reply = {"ok": False, "error": error_line(error)}
        reply["peak_rss_mb"] = peak_rss_mb()
        protocol.write(json.dumps(reply) + "\n")
        protocol.flush()
        if command["cmd"] == "quit":
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
