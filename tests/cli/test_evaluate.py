"""kerasvit.reports metrics against hand-computed cases, and the kerasvit.evaluate CLI on a
real (tiny) run: report files, merged metrics.json, agreement with training's own test metrics."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from trained_run import tiny_vit_run

from kerasvit.cli import evaluate
from kerasvit.evaluation import classification

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIGURES = ("confusion_matrix", "per_class_accuracy", "training_curves", "mistakes", "samples")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return tiny_vit_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def evaluated_run(tiny_run):
    """The tiny run evaluated on the whole test set, as a user would."""
    evaluate.main([str(tiny_run), "--timing-repeats", "2"])
    return tiny_run


# ------------------------------------------------------------ hand-computed metrics

# 3 classes, 6 images; predicted classes 0, 1, 1, 1, 2, 0 for true classes 0, 0, 1, 1, 2, 2.
HAND_LABELS = np.array([0, 0, 1, 1, 2, 2])
HAND_PROBABILITIES = np.array([
    [0.7, 0.2, 0.1],
    [0.3, 0.6, 0.1],   # wrong: class 0 predicted 1; true class is 2nd
    [0.1, 0.8, 0.1],
    [0.2, 0.5, 0.3],
    [0.1, 0.1, 0.8],
    [0.5, 0.1, 0.4],   # wrong: class 2 predicted 0; true class is 2nd
])
HAND_NAMES = ("a", "b", "c")


def test_metrics_match_hand_computed_case():
    metrics = classification.classification_metrics(HAND_LABELS, HAND_PROBABILITIES, HAND_NAMES)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # precision a: 1 of 2 predicted a; b: 2 of 3; c: 1 of 1. recall: 1/2, 2/2, 1/2.
    per_class = metrics["per_class"]
    assert [per_class[n]["precision"] for n in HAND_NAMES] == pytest.approx([1 / 2, 2 / 3, 1])
    assert [per_class[n]["recall"] for n in HAND_NAMES] == pytest.approx([1 / 2, 1, 1 / 2])
    assert [per_class[n]["accuracy"] for n in HAND_NAMES] == pytest.approx([1 / 2, 1, 1 / 2])
    assert [per_class[n]["f1"] for n in HAND_NAMES] == pytest.approx([1 / 2, 4 / 5, 2 / 3])
    assert [per_class[n]["support"] for n in HAND_NAMES] == [2, 2, 2]
    assert metrics["precision_macro"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert metrics["recall_macro"] == pytest.approx(2 / 3)
    assert metrics["f1_macro"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert "macro avg" in metrics["classification_report"]


def test_top_k_accuracy_by_hand():
    # Both mistakes have the true class second, so top-2 is perfect; top-1 is 4/6.
    assert classification.top_k_accuracy(HAND_LABELS, HAND_PROBABILITIES, 1) == pytest.approx(4 / 6)
    assert classification.top_k_accuracy(HAND_LABELS, HAND_PROBABILITIES, 2) == 1.0


def test_cross_entropy_and_softmax_by_hand():
    logits = np.array([[0.0, 0.0], [np.log(3.0), 0.0]])
    # -log(1/2) and -log(3/4), averaged.
    expected = (np.log(2) + np.log(4 / 3)) / 2
    assert classification.cross_entropy(np.array([0, 0]), logits) == pytest.approx(expected)
    assert classification.softmax(logits)[1] == pytest.approx([0.75, 0.25])
    # Stable for large logits (a naive exp overflows to inf/nan).
    assert classification.softmax(np.array([[1000.0, 0.0]]))[0] == pytest.approx([1.0, 0.0])


def test_most_confident_mistakes_order():
    # Mistakes are rows 1 (confidence 0.6) and 5 (0.5).
    assert list(classification.most_confident_mistakes(HAND_LABELS, HAND_PROBABILITIES, 5)) == [1, 5]


# ------------------------------------------------------------ the CLI on a real run


def test_evaluate_writes_every_report_file(evaluated_run):
    for name in FIGURES:
        with Image.open(evaluated_run / f"{name}.png") as image:
            image.verify()
        with Image.open(evaluated_run / f"{name}.png") as image:
            assert image.format == "PNG"
            assert image.width >= 400 and image.height >= 300, (name, image.size)
            assert image.width <= 3000 and image.height <= 3000, (name, image.size)
    report = (evaluated_run / "report.md").read_text()
    for name in FIGURES:
        assert f"({name}.png)" in report
    assert "| test accuracy |" in report and "macro avg" in report


def test_metrics_json_keeps_training_keys_and_adds_evaluation(evaluated_run):
    metrics = json.loads((evaluated_run / "metrics.json").read_text())
    for key in ("test_accuracy", "best_val_accuracy", "train_images", "wall_time_s"):
        assert key in metrics, key
    evaluation = metrics["evaluation"]
    assert evaluation["test_images"] == 10000
    assert evaluation["backend"] == os.environ["KERAS_BACKEND"]
    assert evaluation["trained_backend"] == os.environ["KERAS_BACKEND"]
    assert evaluation["image_size"] == [32, 32]
    assert evaluation["images_per_s"] > 0 and evaluation["latency_ms"] > 0
    assert sum(row["support"] for row in evaluation["per_class"].values()) == 10000
    assert np.asarray(evaluation["confusion_matrix"]).sum() == 10000


def test_evaluation_agrees_with_training_test_metrics(evaluated_run):
    """Same model, same backend, same 10k images: sklearn's numbers equal Keras' metrics."""
    metrics = json.loads((evaluated_run / "metrics.json").read_text())
    evaluation = metrics["evaluation"]
    assert evaluation["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert evaluation["top5_accuracy"] == pytest.approx(metrics["test_top5_accuracy"], abs=1e-6)
    assert evaluation["f1_macro"] == pytest.approx(metrics["test_f1_macro"], abs=1e-5)


def test_predictions_npz_matches_metrics(evaluated_run):
    saved = np.load(evaluated_run / "predictions.npz")
    evaluation = json.loads((evaluated_run / "metrics.json").read_text())["evaluation"]
    accuracy = np.mean(np.argmax(saved["logits"], axis=-1) == saved["labels"])
    assert accuracy == pytest.approx(evaluation["accuracy"])
    assert classification.cross_entropy(saved["labels"], saved["logits"]) == pytest.approx(evaluation["loss"])


def test_lone_keras_file_with_out_folder(tiny_run, tmp_path):
    model_file = tmp_path / "copied.keras"
    shutil.copy(tiny_run / "model.keras", model_file)
    out = tmp_path / "report"
    evaluate.main([str(model_file), "--out", str(out), "--test-images", "100",
                   "--timing-repeats", "1", "--batch-size", "50"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"evaluation"}
    assert metrics["evaluation"]["test_images"] == 100
    assert metrics["evaluation"]["trained_backend"] is None
    assert metrics["evaluation"]["throughput_batch_size"] == 50
    assert not (out / "training_curves.png").exists()  # No run folder, no history.
    assert (out / "confusion_matrix.png").is_file() and (out / "report.md").is_file()


@pytest.mark.parametrize("argv, expected", [
    (["/no/such/run"], "does not exist"),
    (["README.md"], "not a .keras file"),
    ([".", "--batch-size", "0"], "--batch-size must be at least 1"),
    ([".", "--bogus"], "unrecognized arguments"),
])
def test_bad_input_is_one_line(argv, expected, capsys, tmp_path):
    argv = [str(tmp_path / "README.md") if a == "README.md" else a for a in argv]
    (tmp_path / "README.md").write_text("not a model")
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and expected in error, error


def test_corrupt_keras_file_is_one_line(tmp_path, capsys):
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([str(broken)])
    assert exit_info.value.code == 2
    assert "not a valid .keras file" in capsys.readouterr().err


def test_invalid_backend_is_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "kerasvit.evaluate", "whatever"], capture_output=True, text=True,
        env={**os.environ, "KERAS_BACKEND": "bogus", "PYTHONPATH": REPO_ROOT}, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kerasvit.evaluate: error: unknown backend KERAS_BACKEND='bogus'; "
        "set it to one of tensorflow, jax, torch"]


def test_broken_metrics_json_in_out_folder_is_one_line(tiny_run, tmp_path, capsys):
    (tmp_path / "metrics.json").write_text("{ half written")
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([str(tiny_run), "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "metrics.json is not valid JSON" in err[0], err
