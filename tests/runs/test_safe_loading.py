"""Unsafe files are refused (issue 9): Lambda layers (Python code) only with --unsafe-load,
no pickle anywhere, the demo on localhost."""

import re
from pathlib import Path

import pytest
from cli_helpers import (
    png_bytes,
)

from kerasvit.cli import predict

REPO = Path(__file__).resolve().parents[2]
KERASVIT = REPO / "kerasvit"


def test_lambda_layer_code_runs_only_with_unsafe_load(lambda_model, tmp_path, capsys):
    """Refused in safe mode before keras even reads the file (the code never runs); loaded,
    and its code run, only with --unsafe-load."""
    path, marker = lambda_model
    image = tmp_path / "image.png"
    image.write_bytes(png_bytes())
    with pytest.raises(SystemExit) as refused:
        predict.main(["--model", str(path), str(image)])
    assert refused.value.code == 2
    assert "--unsafe-load" in capsys.readouterr().err
    assert not marker.exists()
    assert predict.main(["--model", str(path), "--unsafe-load", "--top-k", "2", str(image)]) == 0
    assert "1. " in capsys.readouterr().out
    assert marker.exists()  # this is what --unsafe-load allows
    marker.unlink()


def test_code_that_the_scan_misses_is_still_refused_by_keras_safe_mode(lambda_model, monkeypatch):
    """The pre-check is a convenience; Keras' own safe mode remains the guard."""
    from kerasvit.runs import loading

    path, marker = lambda_model
    monkeypatch.setattr(loading, "find_python_code", lambda config: None)
    with pytest.raises(loading.UnsafeModelError, match="--unsafe-load"):
        loading.load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("program", ["evaluate", "predict", "explain", "demo", "export"])
def test_every_model_loading_cli_has_unsafe_load(program):
    import importlib

    module = importlib.import_module(f"kerasvit.cli.{program}")
    argv = {"predict": ["--model", "m.keras", "x.png"],
            "export": ["m.keras", "--format", "onnx"]}.get(program, ["m.keras"])
    assert module.parse_args([*argv, "--unsafe-load"]).unsafe_load is True
    assert module.parse_args(argv).unsafe_load is False


@pytest.mark.parametrize("program", ["explain", "demo", "export"])
def test_explain_demo_and_export_refuse_a_lambda_layer(program, lambda_model, capsys):
    import importlib

    path, marker = lambda_model
    extra = ["--format", "onnx"] if program == "export" else []
    with pytest.raises(SystemExit) as refused:
        importlib.import_module(f"kerasvit.cli.{program}").main([str(path), *extra])
    assert refused.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--unsafe-load" in lines[0], lines
    assert not marker.exists()


UNSAFE_PATTERNS = {
    r"\bimport pickle\b|\bpickle\.load": "pickle",
    r"allow_pickle\s*=\s*True": "np.load with allow_pickle=True",
    r"\btorch\.load\(": "torch.load (pickle underneath)",
    r"\b(dill|cloudpickle|joblib|marshal)\b": "another pickle-like loader",
    r"safe_mode\s*=\s*False\s*[,)]|enable_unsafe_deserialization":
        "Keras unsafe mode outside --unsafe-load",
    r"\beval\(|\bexec\(": "eval/exec",
}


def test_no_pickle_or_unsafe_loading_in_the_package():
    """Nothing untrusted is unpickled: np.load keeps allow_pickle=False (its default),
    .keras files load in safe mode except through --unsafe-load."""
    found = []
    for path in sorted(KERASVIT.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#")[0]
            for pattern, what in UNSAFE_PATTERNS.items():
                if re.search(pattern, code):
                    found.append(f"{path.relative_to(REPO)}:{number}: {what}: {line.strip()}")
    assert not found, "\n".join(found)
    assert "safe_mode=not unsafe_load" in (KERASVIT / "runs" / "loading.py").read_text()


def test_demo_listens_on_localhost_unless_told_otherwise():
    from types import SimpleNamespace

    from kerasvit.cli import demo

    assert demo.parse_args(["runs/x"]).host == "127.0.0.1"

    class Page:
        def queue(self):
            return self

        def launch(self, **options):
            self.options = options

        def block_thread(self):
            pass

    page = Page()
    served = SimpleNamespace(name="cnn", source="runs/x", backend="torch")
    demo.serve(page, served, demo.parse_args(["runs/x"]).host, 7860)
    assert page.options["server_name"] == "127.0.0.1"
    assert not page.options.get("share")


