"""Training and evaluation throughput of kerasvit (every Keras backend, fp32 / bf16, jit on
and off) against a plain PyTorch loop on the identical network, side by side in one run.

    python bench/throughput.py --model cnn --json out.json --md out.md
    python bench/throughput.py --model vit --json vit.json
    python bench/throughput.py --model vit_b16 --json vit_b16.json        # batch 8, few steps
    python bench/throughput.py --model cnn --list                          # the contenders

Each group of contenders lives in a worker process of its own (Keras fixes the backend at
import), all started first and warmed up (compilation excluded). Then R rounds: in each, every
contender in turn runs a chunk of training steps and a chunk of evaluation batches while the
others wait, the order rotating from round to round, so drift on the machine hits all of
them alike. Every step ends with the device synced (the loss read back); the first steps
of each chunk are dropped; figures are medians over the kept steps. See bench/README.md.

The parent imports no framework.
"""

import argparse
import json
import os
import queue
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import contenders as contender_defs  # noqa: E402
from bench import machine  # noqa: E402

SCHEMA_VERSION = 1
MODELS = ("cnn", "vit", "vit_b16")
# Per model: timed steps per contender per round, warm-up steps, batch (None: the config's).
DEFAULTS = {
    "cnn": dict(steps=5, warmup=3, batch_size=None, pipeline_batches=40),
    "vit": dict(steps=5, warmup=3, batch_size=None, pipeline_batches=40),
    "vit_b16": dict(steps=2, warmup=2, batch_size=8, pipeline_batches=20),
}
# The bars: kerasvit's best backend vs the best native loop, and the input pipeline
# vs the fastest training contender.
GOALS = {
    "cnn": {"train_ratio": 1.2, "eval_ratio": 1.2, "pipeline_ratio": 3.0},
    "vit": {"train_ratio": 1.2, "eval_ratio": 1.2, "pipeline_ratio": 3.0},
    "vit_b16": {"train_ratio": 1.0, "eval_ratio": None, "pipeline_ratio": 3.0},
}
OTHER_CPU_WARNING = 0.10


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="bench/throughput.py",
        description="kerasvit vs native PyTorch training/evaluation throughput, side by side.")
    parser.add_argument("--model", required=True, choices=MODELS)
    parser.add_argument("--json", type=Path, help="write the results here (required unless --list)")
    parser.add_argument("--md", type=Path, help="also write the markdown table here")
    parser.add_argument("--steps", type=int, help="timed training steps per contender per round "
                        "(default 5; vit_b16 2)")
    parser.add_argument("--eval-steps", type=int, help="timed evaluation batches per contender per "
                        "round (default: --steps)")
    parser.add_argument("--warmup", type=int, help="warm-up training steps (and evaluation "
                        "batches) per contender before the rounds, not counted (default 3; vit_b16 2)")
    parser.add_argument("--settle", type=int, default=1, help="steps at the start of every chunk "
                        "that are not counted (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="alternation rounds (default 3)")
    parser.add_argument("--config", type=Path, help="experiment file whose optimizer, schedule "
                        "and model_args the Keras contenders use (default: configs/<model>.toml), "
                        "e.g. configs/cnn_airbench94.toml")
    parser.add_argument("--batch-size", type=int,
                        help="batch (default: the config's, cnn 1000, vit 128; vit_b16 8)")
    parser.add_argument("--contenders", help="comma-separated name patterns (fnmatch), or 'all'; "
                        "default: the default set (see --list)")
    parser.add_argument("--skip", help="comma-separated name patterns to leave out")
    parser.add_argument("--no-pipeline", action="store_true",
                        help="do not measure the input pipeline")
    parser.add_argument("--pipeline-batches", type=int,
                        help="input-pipeline batches per round (default 40; vit_b16 20)")
    parser.add_argument("--model-args", default="{}",
                        help="JSON object of model_args overrides (vit_b16: ViTBackbone arguments), "
                        "e.g. for tiny test runs")
    parser.add_argument("--keras-data", choices=("memory", "pipeline"), default="memory",
                        help="what Keras fit trains on: the pre-made batches every contender "
                        "uses (memory, default), or kerasvit's live augmented tf.data pipeline "
                        "(pipeline: end to end, as kerasvit.train; native still uses memory)")
    parser.add_argument("--synthetic", action="store_true",
                        help="random images instead of CIFAR-10 (tests; the pipeline is still "
                        "kerasvit's training_stream)")
    parser.add_argument("--synthetic-images", type=int, default=2048)
    parser.add_argument("--data-dir", default="", help="TFDS data dir (default $TFDS_DATA_DIR, "
                        "else ../shared/tensorflow_datasets beside the repo if present)")
    parser.add_argument("--device", choices=("auto", "cpu"), default="auto",
                        help="native contenders: cuda when available (auto) or cpu")
    parser.add_argument("--pause", type=float, default=0.5,
                        help="seconds of quiet between chunks (idle threads settle)")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds a worker may take for one command (setup included)")
    parser.add_argument("--log-dir", type=Path,
                        help="worker logs and the shared batches (default: <json>_logs/)")
    parser.add_argument("--list", action="store_true", help="list the contenders and exit")
    args = parser.parse_args(argv)
    for key, value in DEFAULTS[args.model].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.eval_steps is None:
        args.eval_steps = args.steps
    if not args.list and args.json is None:
        parser.error("--json is required")
    for name in ("steps", "eval_steps", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 1 or args.settle < 0:
        parser.error("--warmup must be >= 1 and --settle >= 0")
    try:
        args.model_args = json.loads(args.model_args)
        assert isinstance(args.model_args, dict)
    except (json.JSONDecodeError, AssertionError):
        parser.error("--model-args must be a JSON object")
    return args


# --- configuration -----------------------------------------------------------------------

def resolve_config(args):
    """kerasvit's experiment config for the model (--config, else configs/<model>.toml):
    optimizer, loss, augmentation, model_args; the batch from the flags."""
    from kerasvit import config as config_module

    config = config_module.resolve(getattr(args, "config", None), args.model, {}, [])
    if args.batch_size:
        config.batch_size = args.batch_size
    data_dir = args.data_dir or os.environ.get("TFDS_DATA_DIR", "")
    shared = REPO.parent / "shared" / "tensorflow_datasets"
    if not data_dir and shared.is_dir():
        data_dir = str(shared)
    config.data_dir = data_dir
    config.mixed_precision = "off"
    values = config.to_dict()
    if args.model != "vit_b16":
        values["model_args"].update(args.model_args)
    return values


def vit_b16_arch(args):
    from bench.native_models import VIT_B16_ARCH

    arch = {**VIT_B16_ARCH, **(args.model_args if args.model == "vit_b16" else {})}
    arch["image_shape"] = list(arch["image_shape"])
    return arch


def image_size(args, config, arch):
    if args.model == "vit_b16":
        return list(arch["image_shape"][:2])
    return list(config["model_args"].get("image_shape", (32, 32, 3))[:2])


# --- workers -----------------------------------------------------------------------------

class WorkerDied(RuntimeError):
    pass


class CommandFailed(RuntimeError):
    pass


class WorkerProcess:
    """A bench/worker.py process: JSON commands in on stdin, replies out on stdout, the rest
    (framework output, tracebacks) into its log file."""

    def __init__(self, group, spec, log_dir):
        self.group = group
        self.backend = spec["backend"]
        spec_path = log_dir / f"{group}.spec.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        self.log_path = log_dir / f"{group}.log"
        env = dict(os.environ)
        env["KERAS_BACKEND"] = spec["backend"] or "tensorflow"
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(BENCH / "worker.py"), str(spec_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
            env=env, cwd=REPO)
        self.replies = queue.Queue()
        self.peak_rss_mb = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.replies.put(json.loads(line))
            except json.JSONDecodeError:
                pass
        self.replies.put(None)

    def log_tail(self, lines=3):
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:])

    def request(self, command, timeout):
        if self.proc.poll() is not None:
            raise WorkerDied(f"worker {self.group} exited with code {self.proc.returncode}: "
                             f"{self.log_tail()}")
        try:
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerDied(f"worker {self.group} is gone: {self.log_tail()}") from None
        try:
            reply = self.replies.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise WorkerDied(f"worker {self.group} gave no answer to {command['cmd']} within "
                             f"{timeout:.0f} s (killed)") from None
        if reply is None:
            code = self.proc.wait()
            raise WorkerDied(f"worker {self.group} exited with code {code} during "
                             f"{command['cmd']}: {self.log_tail()}")
        self.peak_rss_mb = reply.get("peak_rss_mb", self.peak_rss_mb)
        if not reply.get("ok"):
            raise CommandFailed(reply.get("error", "unknown error"))
        return reply

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        try:
            if self.proc.poll() is None:
                self.request({"cmd": "quit"}, timeout=60)
                self.proc.wait(timeout=60)
        except (WorkerDied, CommandFailed, subprocess.TimeoutExpired):
            self.kill()
        finally:
            self.log.close()


# --- statistics --------------------------------------------------------------------------

def step_stats(times, batch_size):
    """Median images/s (batch / median step time) and the spread of per-step images/s."""
    import numpy as np

    if not times:
        return None
    t = np.asarray(times, dtype=float)
    rates = batch_size / t
    q1, q3 = np.percentile(rates, [25, 75])
    return {
        "images_per_s": float(batch_size / np.median(t)),
        "images_per_s_p10": float(np.percentile(rates, 10)),
        "images_per_s_p90": float(np.percentile(rates, 90)),
        "images_per_s_q1": float(q1),
        "images_per_s_q3": float(q3),
        "images_per_s_iqr": float(q3 - q1),
        "step_s_median": float(np.median(t)),
        "steps": int(len(t)),
    }


def with_rounds(stats, rounds, batch_size):
    import numpy as np

    if stats is not None:
        stats["per_round_images_per_s"] = [
            float(batch_size / np.median(r)) if r else None for r in rounds]
    return stats


def pipeline_stats(chunks, batch_size):
    import numpy as np

    if not chunks:
        return None
    rates = [c["images"] / c["seconds"] for c in chunks]
    batch_rates = [batch_size / t for c in chunks for t in c["batch_times"] if t > 0]
    return {
        "images_per_s": float(np.median(rates)),
        "images_per_s_p10": float(np.percentile(batch_rates, 10)) if batch_rates else None,
        "images_per_s_p90": float(np.percentile(batch_rates, 90)) if batch_rates else None,
        "per_round_images_per_s": [float(r) for r in rates],
        "batches": int(sum(c["batches"] for c in chunks)),
    }


# --- the run -----------------------------------------------------------------------------

def group_contenders(chosen):
    groups = {}
    for c in chosen:
        groups.setdefault(c["group"], []).append(c)
    return groups


class Bench:
    def __init__(self, args):
        self.args = args
        self.config = resolve_config(args)
        self.arch = vit_b16_arch(args)
        self.image_size = image_size(args, self.config, self.arch)
        self.batch_size = self.config["batch_size"]
        self.chosen = contender_defs.select(args.model, args.contenders, args.skip)
        self.log_dir = (args.log_dir or args.json.with_name(args.json.stem + "_logs")).resolve()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.batches_path = self.log_dir / "batches.npz"
        self.results = {c["name"]: {**c, "status": "pending", "error": None}
                        for c in self.chosen}
        self.train_rounds = {c["name"]: [] for c in self.chosen}
        self.eval_rounds = {c["name"]: [] for c in self.chosen}
        self.pipeline_chunks = []
        self.pipeline_setup = None
        self.worker_of = {}
        self.workers = {}
        self.worker_info = {}

    def spec(self, group, kind, backend, members):
        a = self.args
        return {
            "model": a.model, "group": group, "kind": kind, "backend": backend,
            "contenders": members, "config": self.config, "arch": self.arch,
            "batch_size": self.batch_size, "image_size": self.image_size,
            "batches_path": str(self.batches_path), "num_batches": 4,
            "warmup": a.warmup, "eval_warmup": a.warmup, "device": a.device,
            "synthetic": a.synthetic, "synthetic_images": a.synthetic_images,
            "measure_pipeline": not a.no_pipeline, "pipeline_batches": a.pipeline_batches,
            "keras_data": a.keras_data,
        }

    def log(self, message):
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def fail(self, names, error):
        for name in names:
            if self.results[name]["status"] in ("pending", "ok"):
                self.results[name]["status"] = "failed"
                self.results[name]["error"] = error
                self.log(f"{name} FAILED: {error}")

    def start_group(self, group, members):
        kind = "native" if members[0]["kind"] == "native" else "keras"
        backend = members[0]["backend"]
        self.log(f"starting {group} ({backend}): {', '.join(c['name'] for c in members)}")
        worker = WorkerProcess(group, self.spec(group, kind, backend, members), self.log_dir)
        self.workers[group] = worker
        names = [c["name"] for c in members]
        try:
            reply = worker.request({"cmd": "setup"}, timeout=self.args.timeout)
        except (WorkerDied, CommandFailed) as error:
            self.fail(names, str(error))
            worker.kill()
            return
        self.worker_info[group] = reply.get("worker", {})
        for name, info in reply["contenders"].items():
            result = self.results[name]
            status = info.pop("status")
            result.update(setup=info)
            if status == "ok":
                result["status"] = "ok"
                self.worker_of[name] = worker
            else:
                self.fail([name], info.get("error"))

    def start_pipeline(self):
        spec = self.spec("pipeline", "pipeline", "tensorflow", [])
        self.log("preparing the batches (kerasvit.data.stream.training_stream) and the pipeline worker")
        worker = WorkerProcess("pipeline", spec, self.log_dir)
        self.workers["pipeline"] = worker
        reply = worker.request({"cmd": "setup"}, timeout=self.args.timeout)
        self.pipeline_setup = reply["contenders"]["pipeline"]
        return worker

    def run_chunk(self, name):
        worker = self.worker_of[name]
        a = self.args
        try:
            train = worker.request({"cmd": "train", "name": name, "steps": a.steps + a.settle},
                                   timeout=a.timeout)["times"]
            time.sleep(a.pause)
            evals = worker.request({"cmd": "eval", "name": name, "steps": a.eval_steps + a.settle},
                                   timeout=a.timeout)["times"]
        except CommandFailed as error:
            self.fail([name], str(error))
            return
        except WorkerDied as error:
            self.fail([n for n, w in self.worker_of.items() if w is worker], str(error))
            return
        self.train_rounds[name].append(train[a.settle:])
        self.eval_rounds[name].append(evals[a.settle:])

    def run(self):
        a = self.args
        started_wall = time.time()
        started = time.perf_counter()
        cpu_before = machine.busy_cpu_seconds()
        self.machine = machine.machine_info()
        try:
            pipeline = self.start_pipeline()
            for group, members in group_contenders(self.chosen).items():
                self.start_group(group, members)
            turns = [n for n in self.results if self.results[n]["status"] == "ok"]
            if not a.no_pipeline:
                turns.append("pipeline")
            for round_index in range(a.rounds):
                shift = round_index % max(len(turns), 1)
                order = turns[shift:] + turns[:shift]
                self.log(f"round {round_index + 1}/{a.rounds}")
                for name in order:
                    if name == "pipeline":
                        try:
                            self.pipeline_chunks.append(pipeline.request(
                                {"cmd": "pipeline", "batches": a.pipeline_batches},
                                timeout=a.timeout))
                        except (WorkerDied, CommandFailed) as error:
                            self.log(f"pipeline FAILED: {error}")
                            self.pipeline_error = str(error)
                            turns.remove("pipeline")
                    elif self.results[name]["status"] == "ok":
                        self.run_chunk(name)
                    time.sleep(a.pause)
        finally:
            for group, worker in self.workers.items():
                worker.close()
        wall = time.perf_counter() - started
        cpu_after = machine.busy_cpu_seconds()
        self.wall_s = wall
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started_wall))
        self.other_cpu_share = other_cpu_share(cpu_before, cpu_after, wall,
                                               self.machine["cpu"]["usable_cpus"])
        return self.report()

    # --- report ----------------------------------------------------------------------
    def report(self):
        a = self.args
        contenders = []
        for name, result in self.results.items():
            entry = dict(result)
            entry.pop("default", None)
            train = with_rounds(step_stats([t for r in self.train_rounds[name] for t in r],
                                           self.batch_size), self.train_rounds[name],
                                self.batch_size)
            evals = with_rounds(step_stats([t for r in self.eval_rounds[name] for t in r],
                                           self.batch_size), self.eval_rounds[name],
                                self.batch_size)
            setup = result.get("setup") or {}
            entry["params"] = setup.get("params")
            entry["images_per_s"] = train["images_per_s"] if train else None
            entry["eval_images_per_s"] = evals["images_per_s"] if evals else None
            entry["train"] = train
            entry["eval"] = evals
            worker = self.workers.get(result["group"])
            entry["worker"] = {"group": result["group"],
                               "peak_rss_mb": worker.peak_rss_mb if worker else None,
                               "log": str(worker.log_path) if worker else None,
                               **self.worker_info.get(result["group"], {})}
            contenders.append(entry)

        best = {"train": best_of(contenders, "images_per_s"),
                "eval": best_of(contenders, "eval_images_per_s")}
        train_ratio = ratio(best["train"], "keras", "native", "images_per_s")
        eval_ratio = ratio(best["eval"], "keras", "native", "eval_images_per_s")
        pipeline = self.pipeline_report(contenders)
        goals = GOALS[a.model]
        params = param_check(contenders)
        report = {
            "schema_version": SCHEMA_VERSION,
            "model": a.model,
            "started": self.started,
            "wall_s": self.wall_s,
            "best_keras_over_best_native": train_ratio,
            "best_keras_over_best_native_eval": eval_ratio,
            "best_preview_over_best_native": ratio(best["train"], "preview", "native",
                                                   "images_per_s"),
            "best": best,
            "goals": {
                **goals,
                "train_ratio_met": None if train_ratio is None else train_ratio >= goals["train_ratio"],
                "eval_ratio_met": (None if eval_ratio is None or goals["eval_ratio"] is None
                                   else eval_ratio >= goals["eval_ratio"]),
                "pipeline_ratio_met": pipeline and pipeline.get("meets_goal"),
            },
            "pipeline": pipeline,
            "param_check": params,
            "contenders": contenders,
            "settings": {
                "batch_size": self.batch_size,
                "image_size": self.image_size,
                "steps_per_round": a.steps,
                "eval_steps_per_round": a.eval_steps,
                "warmup_steps": a.warmup,
                "settle_steps_per_chunk": a.settle,
                "rounds": a.rounds,
                "pause_s": a.pause,
                "data": "synthetic" if a.synthetic else "CIFAR-10 train split",
                "keras_data": a.keras_data,
                "augmentation": self.config["augmentation"],
                "model_args": self.config["model_args"] if a.model != "vit_b16" else self.arch,
                "optimizer": optimizer_settings(self.config),
                "loss": {"name": "categorical cross-entropy from logits",
                         "label_smoothing": self.config["label_smoothing"]},
                "device": a.device,
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else None,
            },
            "method": METHOD,
            "machine": self.machine,
            "versions": machine.versions(),
            "other_cpu_share": self.other_cpu_share,
            "log_dir": str(self.log_dir),
        }
        return report

    def pipeline_report(self, contenders):
        if self.args.no_pipeline:
            return None
        stats = pipeline_stats(self.pipeline_chunks, self.batch_size)
        out = {"what": "kerasvit.data.stream.training_stream on the train split: "
                       "augmentation, one-hot labels, batching, prefetch; batches "
                       "converted to numpy", **(self.pipeline_setup or {})}
        out.pop("versions", None)
        out.pop("status", None)
        if stats is None:
            out.update(images_per_s=None, error=getattr(self, "pipeline_error", "not measured"))
            return out
        out.update(stats)
        fastest = best_of(contenders, "images_per_s").get("any")
        out["fastest_training_contender"] = fastest["name"] if fastest else None
        out["ratio_to_fastest_training"] = (stats["images_per_s"] / fastest["images_per_s"]
                                            if fastest else None)
        goal = GOALS[self.args.model]["pipeline_ratio"]
        out["goal_ratio"] = goal
        out["meets_goal"] = (None if out["ratio_to_fastest_training"] is None
                             else out["ratio_to_fastest_training"] >= goal)
        return out


METHOD = (
    "Each contender group runs in its own worker process (one Keras backend per process); "
    "all are built and warmed up first (warm-up steps, including compilation, are not "
    "counted). Then, for R rounds, each contender in turn runs a chunk of training steps "
    "and a chunk of evaluation batches while every other process waits idle; the order "
    "rotates by one each round. The first `settle` steps of every chunk are dropped. "
    "Keras training: model.fit on a tf.data dataset of pre-made real CIFAR-10 batches "
    "(kerasvit.data.stream.training_stream output, augmented), compiled by "
    "kerasvit.training.recipe.compile_model; step time = interval between consecutive "
    "on_train_batch_end calls after float(loss) (device synced; batch fetch included). "
    "Keras evaluation: model.predict_on_batch (as kerasvit.evaluate). Native: "
    "a plain PyTorch loop on the same batches (from_numpy, forward, label-smoothed "
    "cross-entropy, backward, the config's optimizer (AdamW, or Nesterov SGD without "
    "lookahead), LR schedule, loss.item()); evaluation: eval mode + "
    "inference_mode forward, logits to numpy. images_per_s = batch / median step time; "
    "p10/p90 and quartiles are over per-step images/s."
)


def optimizer_settings(config):
    """The config's optimizer as both sides run it (kerasvit.training.recipe.make_optimizer;
    bench.native_models.make_optimizer)."""
    out = {"name": config["optimizer"], "learning_rate": config["learning_rate"],
           "weight_decay": config["weight_decay"], "schedule": config["schedule"],
           "warmup_epochs": config["warmup_epochs"]}
    if config["optimizer"] == "nesterov_sgd":
        out.update(momentum=config["momentum"], bias_lr_scale=config["bias_lr_scale"],
                   lookahead_every=config["lookahead_every"],
                   whitening_bias_epochs=config["whitening_bias_epochs"],
                   muon_learning_rate=config["muon_learning_rate"],
                   muon_momentum=config["muon_momentum"],
                   native="torch.optim.SGD(nesterov=True), airbench's parameter groups, "
                          "no lookahead" + (", Muon steps on the conv kernels"
                                            if config["muon_learning_rate"] else ""))
    return out


def best_of(contenders, metric):
    """The best ok contender by `metric` per kind (keras, native, preview) and overall."""
    out = {}
    for kind in ("keras", "native", "preview", "any"):
        pool = [c for c in contenders if c["status"] == "ok" and c.get(metric)
                and c["kind"] != "pipeline" and (kind == "any" or c["kind"] == kind)]
        if pool:
            top = max(pool, key=lambda c: c[metric])
            out[kind] = {"name": top["name"], metric: top[metric]}
    return out


def ratio(best, numerator, denominator, metric):
    if numerator in best and denominator in best:
        return best[numerator][metric] / best[denominator][metric]
    return None


def param_check(contenders):
    """Every model contender must have the same parameter counts (the Keras model, its
    previews and the native twin)."""
    counts = {c["name"]: c["params"] for c in contenders if c.get("params")}
    keras_counts = {n: p for n, p in counts.items()
                    if next(c for c in contenders if c["name"] == n)["kind"] in ("keras", "preview")}
    native_counts = {n: p for n, p in counts.items() if n not in keras_counts}
    distinct = {(p["trainable"], p["non_trainable"]) for p in counts.values()}
    keras_ref = next(iter(keras_counts.values()), None)
    native_ref = next(iter(native_counts.values()), None)
    return {
        "keras": keras_ref,
        "native": native_ref,
        "match": None if not (keras_ref and native_ref) else len(distinct) == 1,
        "all_equal": len(distinct) <= 1,
    }


def other_cpu_share(before, after, wall_s, cpus):
    """Share of the machine's CPU that processes outside this benchmark used during it."""
    if before is None or after is None or wall_s <= 0:
        return None
    own = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = resource.getrusage(resource.RUSAGE_SELF)
    ours = own.ru_utime + own.ru_stime + me.ru_utime + me.ru_stime
    return max(0.0, (after - before - ours) / (wall_s * max(cpus or 1, 1)))


# --- markdown ----------------------------------------------------------------------------

def fmt(value, digits=0):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def spread(stats):
    if not stats:
        return "-"
    return f"{stats['images_per_s_p10']:,.0f}-{stats['images_per_s_p90']:,.0f}"


def describe_settings(c):
    parts = []
    if c["kind"] in ("keras", "preview"):
        if c["backend"] == "jax":
            parts.append("XLA (always)")
        elif c["backend"] == "tensorflow":
            parts.append("XLA" if c.get("jit") else "no XLA")
        elif c["backend"] == "torch":
            parts.append("torch.compile" if c.get("compile") else "eager")
        if c.get("change"):
            parts.append(c["change"].replace("_", " "))
    else:
        parts.append("torch.compile" if c.get("compile") else "eager")
        if c.get("channels_last"):
            parts.append("channels_last")
        if c.get("fused_attention") is False:
            parts.append("explicit attention")
    return ", ".join(parts)


def markdown(report):
    s = report["settings"]
    lines = [
        f"# Throughput: `{report['model']}`, batch {s['batch_size']}, "
        f"{s['image_size'][0]}x{s['image_size'][1]}",
        "",
        f"{report['started']}; {s['rounds']} rounds x {s['steps_per_round']} training steps "
        f"and {s['eval_steps_per_round']} evaluation batches per contender (after "
        f"{s['warmup_steps']} warm-up steps; {s['settle_steps_per_chunk']} settle step per "
        f"chunk dropped). Data: {s['data']}"
        f"{'; Keras trains on the live pipeline' if s['keras_data'] == 'pipeline' else ''}. Images/s = batch / median step time; spread = "
        "p10-p90 of per-step images/s.",
        "",
        "| contender | kind | backend | precision | compilation / layout | train images/s | "
        "train p10-p90 | eval images/s | eval p10-p90 | first step s | params | status |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    order = sorted(report["contenders"],
                   key=lambda c: (c["status"] != "ok", -(c.get("images_per_s") or 0)))
    for c in order:
        setup = c.get("setup") or {}
        params = c.get("params") or {}
        status = c["status"] if c["status"] == "ok" else f"{c['status']}: {c.get('error')}"
        framework = c.get("framework", "keras")
        backend = c["backend"] if c["kind"] != "native" else framework
        lines.append(
            f"| {c['name']} | {c['kind']} | {backend} | {c['precision']} | "
            f"{describe_settings(c)} | {fmt(c.get('images_per_s'))} | {spread(c.get('train'))} | "
            f"{fmt(c.get('eval_images_per_s'))} | {spread(c.get('eval'))} | "
            f"{fmt(setup.get('first_step_s'), 1)} | {fmt(params.get('total'))} | "
            f"{status.replace('|', '/')} |")
    best, goals = report["best"], report["goals"]
    lines += ["", "## Verdict", ""]
    for label, key, metric, goal_key, ratio_key in (
            ("Training", "train", "images_per_s", "train_ratio", "best_keras_over_best_native"),
            ("Evaluation", "eval", "eval_images_per_s", "eval_ratio",
             "best_keras_over_best_native_eval")):
        b = best[key]
        keras_best, native_best = b.get("keras"), b.get("native")
        goal = goals.get(goal_key)
        value = report[ratio_key]
        goal_text = f" (goal >= {goal})" if goal else ""
        lines.append(
            f"- **{label}**: best Keras {name_rate(keras_best, metric)}, best native "
            f"{name_rate(native_best, metric)}: `{ratio_key}` = **{fmt(value, 2)}**{goal_text}.")
    if report.get("best_preview_over_best_native") is not None:
        preview = best["train"].get("preview")
        lines.append(f"- Best preview (a suggested kerasvit change, not counted): "
                     f"{name_rate(preview, 'images_per_s')}; over best native "
                     f"{fmt(report['best_preview_over_best_native'], 2)}.")
    p = report.get("pipeline")
    if p:
        if p.get("images_per_s"):
            lines.append(
                f"- **Input pipeline** ({p.get('augmentation')}, {p.get('image_size')}): "
                f"{fmt(p['images_per_s'])} images/s = **{fmt(p.get('ratio_to_fastest_training'), 1)}x** "
                f"the fastest training contender ({p.get('fastest_training_contender')}; goal >= "
                f"{p.get('goal_ratio')}).")
        else:
            lines.append(f"- Input pipeline: not measured ({p.get('error')}).")
    pc = report["param_check"]
    if pc.get("match") is not None:
        lines.append(f"- Parameter counts: Keras {pc['keras']}, native {pc['native']}: "
                     f"{'equal' if pc['match'] else '**DIFFERENT**'}.")
    share = report.get("other_cpu_share")
    if share is not None and share > OTHER_CPU_WARNING:
        lines.append(f"- **WARNING: other processes used {share:.0%} of the CPU during the run; "
                     "these timings are not reliable.**")
    m, v = report["machine"], report["versions"]
    cpu = m["cpu"]
    flags = ", ".join(f for f, on in cpu["flags"].items() if on) or "none"
    lines += ["", "## Machine and versions", "",
              f"- CPU: {cpu['model']}, {cpu['usable_cpus']} usable of {cpu['logical_cpus']} "
              f"logical CPUs ({cpu['physical_cores']} physical cores); flags: {flags}; "
              f"memory {m['memory_gb']} GB; GPUs: {', '.join(m['gpus']) or 'none'}",
              "- " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
              f"- Command: `python bench/{s['command']}`" if s.get("command") else "",
              "", "## Method", "", report["method"], ""]
    return "\n".join(lines)


def name_rate(entry, metric):
    if not entry:
        return "none"
    return f"`{entry['name']}` {fmt(entry[metric])} images/s"


def print_list(model):
    for c in contender_defs.all_contenders(model):
        mark = "*" if c["default"] else " "
        print(f"{mark} {c['name']:<48} {c['kind']:<8} {c['backend']:<11} group={c['group']}")
    print("  pipeline (kerasvit.data.stream.training_stream), unless --no-pipeline")
    print("* = run by default")


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        print_list(args.model)
        return 0
    try:
        bench = Bench(args)
    except ValueError as error:
        print(f"bench/throughput.py: error: {error}", file=sys.stderr)
        return 2
    try:
        report = bench.run()
    except (WorkerDied, CommandFailed) as error:
        print(f"bench/throughput.py: error: {error} (logs in {bench.log_dir})", file=sys.stderr)
        return 1
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(text)
    print(text)
    if report["param_check"].get("match") is False:
        print("bench/throughput.py: error: the native and Keras models have different "
              f"parameter counts: {report['param_check']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
