"""scripts/validation_curves.py: the per-epoch validation plot of the README's ViT section."""

import shutil
from pathlib import Path

import pytest
from cli_helpers import load_script

REPO = Path(__file__).resolve().parent.parent


def test_curves_are_read_per_epoch_and_plotted(tmp_path):
    script = load_script("validation_curves")
    run = tmp_path / "run"
    shutil.copytree(REPO / "results/cnn/cnn-tf-s0", run)
    epochs, accuracy = script.read_curve(run)
    assert epochs == list(range(1, 11))
    assert 80 < accuracy[-1] <= 100 and accuracy[-1] > accuracy[0]
    assert script.label(run) == "run (tensorflow)"
    out = tmp_path / "curves.png"
    script.main([str(run), "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_folder_without_history_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        load_script("validation_curves").main([str(tmp_path), "--out", str(tmp_path / "x.png")])
    assert "no history.csv in" in capsys.readouterr().err


def test_labels_must_match_the_runs(tmp_path, capsys):
    run = REPO / "results/cnn/cnn-tf-s0"
    with pytest.raises(SystemExit):
        load_script("validation_curves").main([str(run), "--out", str(tmp_path / "x.png"), "--labels", "a", "b"])
    assert "--labels needs one label per run: 1 runs, 2 labels" in capsys.readouterr().err
