"""kerasvit.compare_backends: bad input, failing and missing backends (with stand-in workers,
fast), and one real tiny comparison on two backends (slowish, run once)."""

import csv
import importlib.util
import json
import os
import sys
import textwrap

import pytest

from kerasvit.cli import compare_backends
from kerasvit.compare import backends, worker

OUTPUT_FILES = ("results.json", "results.csv", "results.md", "compare.png", "config.json")
TINY = ["--model", "cnn", "--subset-per-class", "10", "--batch-size", "20", "--epochs", "1",
        "--test-images", "100", "--probe-images", "8", "--set", "validation_size=100",
        "--mixed-precision", "off"]  # float32: the load check compares to 1e-4

# Stands in for kerasvit.backend_worker: instant, plausible results for tensorflow, a
# noisy crash for torch, and a config error when the spec's seed is 99.
FAKE_WORKER = textwrap.dedent("""
    import json, os, sys
    mode, spec_path = sys.argv[1:]
    spec = json.load(open(spec_path))
    backend = os.environ["KERAS_BACKEND"]
    if backend == "torch":
        sys.stderr.write("some framework warning\\n" * 300)
        sys.stderr.write("Traceback (most recent call last):\\nRuntimeError: boom in torch\\n")
        sys.stderr.write("some framework warning after the error\\n")
        sys.exit(1)
    if mode == "check":
        result = {"status": "ok", "loaded": {name: {"max_abs_prob_diff": 1e-7, "top1_agreement": 1.0}
                                             for name in spec["model_dirs"]}}
    elif spec["seeds"][0] == 99:
        result = {"status": "failed", "user_error": True,
                  "error": "ConfigError: unknown model argument 'bogus'"}
    else:
        result = {"status": "ok", "env": {"backend": backend, "versions": {backend: "1.0"},
                                          "device_kind": "cpu"},
                  "jit_compile": False, "mixed_precision": False, "import_s": 4.0,
                  "build_s": 0.5, "import_build_s": 4.5, "data_load_s": 2.0,
                  "train_images": 100, "test_images": 100, "first_step_s": 3.0,
                  "median_step_s": 0.1, "steps_measured": 4, "median_eval_batch_s": 0.02,
                  "eval_batches_measured": 4, "val_accuracy": [0.2, 0.3],
                  "test_accuracy": [0.25, 0.35], "train_loss": [2.0, 2.1], "peak_rss_mb": 900.0}
    json.dump(result, open(spec["result_path"], "w"))
""")


def run_main(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare_backends.main(argv)
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--backends", "tensorflow,thenao"], "unknown backend 'thenao'"),
    (["--backends", "jax,jax"], "names a backend twice"),
    (["--backends", ","], "--backends is empty"),
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--set", "bogus_key=1"], "unknown config key 'bogus_key'"),
    (["--jit-compile", "maybe"], "invalid choice"),
    (["--epochs", "0"], "epochs must be positive"),
])
def test_bad_input_is_one_line_and_exit_2(flags, message, capsys, tmp_path):
    code, err = run_main(["--out", str(tmp_path), *flags], capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir()), "nothing is written before the input is accepted"


@pytest.fixture
def fake_workers(tmp_path, monkeypatch):
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    monkeypatch.setattr(backends, "worker_command",
                        lambda mode, spec_path: [sys.executable, str(script), mode, str(spec_path)])
    monkeypatch.setattr(backends, "backend_installed", lambda backend: backend != "jax")
    return tmp_path / "runs"


def test_failing_and_missing_backends_are_reported_not_fatal(fake_workers, capsys):
    out_dir = compare_backends.main(["--out", str(fake_workers), "--seeds", "2", *TINY])
    screen = capsys.readouterr().out
    for name in OUTPUT_FILES:
        assert (out_dir / name).is_file(), name
    assert out_dir.name.startswith("compare-cnn-")

    results = json.loads((out_dir / "results.json").read_text())["results"]
    assert results["jax"]["status"] == "not installed"
    assert results["torch"]["status"] == "failed"
    # The error line, not the warnings printed after it.
    assert results["torch"]["error"] == "RuntimeError: boom in torch"
    ok = results["tensorflow"]
    assert ok["status"] == "ok"
    assert ok["train_images_per_s"] == pytest.approx(20 / 0.1)
    assert ok["test_accuracy"]["mean"] == pytest.approx(0.30)
    assert ok["test_accuracy"]["std"] == pytest.approx(0.0707, abs=1e-3)
    assert ok["loads_elsewhere"] == "no other backend"

    assert "NOT INSTALLED" in screen and "FAILED: RuntimeError: boom in torch" in screen
    assert "some framework warning" not in screen, "worker output goes to its log only"
    markdown = (out_dir / "results.md").read_text()
    assert "0.300 ± 0.071" in markdown and "boom in torch" in markdown
    with open(out_dir / "results.csv") as f:
        rows = {row["backend"]: row for row in csv.DictReader(f)}
    assert rows["torch"]["status"] == "failed" and float(rows["tensorflow"]["peak_rss_mb"]) == 900


def test_worker_config_error_stops_the_comparison(fake_workers, capsys):
    code, err = run_main(["--out", str(fake_workers), "--backends", "tensorflow,torch",
                          "--seed", "99", *TINY], capsys)
    assert code == 2
    assert err.strip() == ("kerasvit.compare_backends: error: "
                           "ConfigError: unknown model argument 'bogus'")


def test_every_backend_failing_exits_1(fake_workers, capsys):
    code, err = run_main(["--out", str(fake_workers), "--backends", "jax,torch", *TINY], capsys)
    assert code == 1
    assert "no backend finished" in err


def test_worker_reports_its_own_error_as_one_line(tmp_path):
    config = {"model": "cnn", "model_args": {"bogus": 1}}
    spec = {"config": config, "seeds": [0], "test_images": 10, "probe_images": 2,
            "model_dir": str(tmp_path), "result_path": str(tmp_path / "result.json"),
            "spawn_time": 0.0}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert worker.main(["train", str(tmp_path / "spec.json")]) == 1
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "failed" and result["user_error"] is True
    assert result["error"].startswith("ConfigError: unknown model argument 'bogus'")


REAL_PAIR = ("tensorflow", "torch")


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") != REAL_PAIR[0],
                    reason="spawns its own tensorflow and torch workers: run once, in the "
                           "tensorflow pytest process")
@pytest.mark.skipif(any(importlib.util.find_spec(name) is None for name in REAL_PAIR),
                    reason="needs tensorflow and torch installed")
def test_tiny_real_comparison(tmp_path, monkeypatch, capsys):
    # jax is made to look uninstalled: the real path for a missing backend, at no cost.
    monkeypatch.setattr(backends, "backend_installed", lambda backend: backend != "jax")
    out_dir = compare_backends.main([
        "--out", str(tmp_path), "--backends", "tensorflow,jax,torch", *TINY,
        # A narrow CNN: this checks the plumbing, not the model.
        "--set", "model_args.widths=[16,16,16]",
    ])
    screen = capsys.readouterr().out
    for name in OUTPUT_FILES:
        assert (out_dir / name).is_file(), name
    report = json.loads((out_dir / "results.json").read_text())
    assert report["results"]["jax"]["status"] == "not installed"
    for backend in REAL_PAIR:
        row = report["results"][backend]
        assert row["status"] == "ok", row.get("error")
        assert 0 < row["import_build_s"] < 120
        assert 0 < row["first_step_s"] < 120
        assert row["steps_measured"] >= 2  # 5 steps, 2 of them warm-up
        assert 1 < row["train_images_per_s"] < 1e6
        assert 1 < row["eval_images_per_s"] < 1e6
        assert 100 < row["peak_rss_mb"] < 64_000
        assert 0 <= row["test_accuracy"]["mean"] <= 1
        assert 0 <= row["val_accuracy"]["mean"] <= 1
        assert row["loads_elsewhere"] == "ok"
        assert row["max_abs_prob_diff_elsewhere"] < 1e-4
        assert (out_dir / "backends" / backend / "model.keras").is_file()
    assert set(report["load_check"]) == set(REAL_PAIR)
    assert "tensorflow" in screen and "NOT INSTALLED" in screen


def test_load_check_verdicts():
    from kerasvit.compare.backend_report import summarise_load_checks

    same = {"max_abs_prob_diff": 2e-7, "top1_agreement": 1.0}
    checks = {"tensorflow": same, "jax": same, "torch": same}
    assert summarise_load_checks("jax", checks)["loads_elsewhere"] == "ok"
    checks["torch"] = {"max_abs_prob_diff": 0.3, "top1_agreement": 0.8}
    assert summarise_load_checks("jax", checks)["loads_elsewhere"] == "differs in torch"
    checks["tensorflow"] = {"error": "LoadError: cannot load"}
    assert summarise_load_checks("jax", checks)["loads_elsewhere"] == "fails in tensorflow"
