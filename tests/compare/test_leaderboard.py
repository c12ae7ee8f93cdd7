"""`python -m kerasvit.compare_models` on three tiny real runs: every output file, the right
rows, runs evaluated when they have no evaluation, data-setting flags, no overwrites, and one
clear line for a folder that is not a run. Plus the Pareto front and flags by hand."""

import contextlib
import csv
import io
import json
import re

import pytest
from suite_passes import in_one_pass

from kerasvit.cli import compare_models, evaluate, train
from kerasvit.compare import leaderboard

# compare_models reads run folders; the folders are the same whichever backend wrote them
# (tests/runs and tests/cli check that per backend).
pytestmark = in_one_pass("the report is built from run folders, whichever backend wrote them")

# Training always evaluates the whole 10k test set, at the training batch size: 16x16 inputs
# (the pipeline resizes) and batch 100 keep that to seconds; at 32x32 and batch 25 it took
# ~80 s per run on torch here.
TINY_DATA = ["--subset-per-class", "10", "--epochs", "2", "--batch-size", "100",
             "--set", "validation_size=100", "--set", "model_args.image_shape=[16, 16, 3]",
             "--mixed-precision", "off"]
TINY_RUNS = {
    # resnet18's augmentation, so that these two are the comparable majority.
    "cnn": ["--set", "model_args.widths=[8, 16, 32]", "--set", "augmentation=pad_crop_flip"],
    "resnet18": ["--set", "model_args.input_conv_filters=8",
                 "--set", "model_args.stackwise_num_filters=[8, 16, 32, 64]",
                 "--set", "model_args.stackwise_num_blocks=[1, 1, 1, 1]"],
    # Another data size and no augmentation: must be flagged as not directly comparable.
    "mobilenet": ["--set", "model_args.input_num_filters=8",
                  "--set", "model_args.stackwise_expansion=[1, 2]",
                  "--set", "model_args.stackwise_num_filters=[8, 16]",
                  "--set", "model_args.stackwise_num_blocks=[1, 1]",
                  "--set", "model_args.stackwise_num_strides=[1, 2]",
                  "--set", "model_args.last_layer_filter=32",
                  "--set", "augmentation=none", "--subset-per-class", "20"],
}
EVALUATION_FLAGS = ["--test-images", "200", "--timing-repeats", "2", "--batch-size", "100"]
OUTPUT_FILES = ("models.md", "models.csv", "models.json", "models.png")


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Three finished runs; only the CNN's is evaluated beforehand."""
    base = tmp_path_factory.mktemp("compare_models")
    run_dirs = {name: train.main(["--model", name, *TINY_DATA, *flags,
                                  "--run-dir", str(base / name)])
                for name, flags in TINY_RUNS.items()}
    evaluate.main([str(run_dirs["cnn"]), *EVALUATION_FLAGS])
    return base, run_dirs


@pytest.fixture(scope="module")
def report(tiny_runs):
    base, run_dirs = tiny_runs
    cnn_evaluated_at = read_json(run_dirs["cnn"] / "metrics.json")["evaluation"]["evaluated_at"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        out_dir = compare_models.main([*map(str, run_dirs.values()),
                                       "--out", str(base / "reports"), *EVALUATION_FLAGS])
    return out_dir, run_dirs, cnn_evaluated_at, printed.getvalue()


def read_json(path):
    return json.loads(path.read_text())


def test_every_output_file_is_written_in_a_new_models_folder(report, tiny_runs):
    out_dir, *_ = report
    assert out_dir.parent == tiny_runs[0] / "reports"
    assert re.fullmatch(r"models-\d{8}-\d{6}(-\d+)?", out_dir.name)
    for name in OUTPUT_FILES:
        assert (out_dir / name).stat().st_size > 0, name
    assert (out_dir / "models.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_row_per_run_ranked_by_test_accuracy(report, backend):
    out_dir, run_dirs, *_ = report
    with open(out_dir / "models.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(row["model"] for row in rows) == sorted(run_dirs)
    assert {row["backend"] for row in rows} == {backend}
    assert [row["rank"] for row in rows] == ["1", "2", "3"]
    accuracies = [float(row["test_accuracy"]) for row in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    assert any(row["pareto"] == "True" for row in rows)

    by_model = {row["model"]: row for row in read_json(out_dir / "models.json")["runs"]}
    for name, run_dir in run_dirs.items():
        row = by_model[name]
        evaluation = read_json(run_dir / "metrics.json")["evaluation"]
        assert row["run"] == run_dir.name and row["parameters"] == evaluation["parameters"]
        assert row["test_accuracy"] == evaluation["accuracy"] and row["test_images"] == 200
        assert row["epochs"] == 2 and row["train_time_s"] > 0 and row["model_file_mb"] > 0
        assert row["latency_ms"] > 0 and row["images_per_s"] > 0
        assert row["best_val_accuracy"] is not None and row["train_val_gap"] is not None


def test_runs_are_evaluated_only_when_they_have_no_evaluation(report):
    _, run_dirs, cnn_evaluated_at, printed = report
    assert read_json(run_dirs["cnn"] / "metrics.json")["evaluation"]["evaluated_at"] == cnn_evaluated_at
    assert f"evaluating {run_dirs['cnn']}" not in printed
    for name in ("resnet18", "mobilenet"):
        assert (run_dirs[name] / "report.md").is_file()  # written by kerasvit.evaluate
        # ... and its summary printed, as kerasvit.evaluate prints it.
        accuracy = read_json(run_dirs[name] / "metrics.json")["evaluation"]["accuracy"]
        summary = printed.split(f"evaluating {run_dirs[name]}", 1)[1].split("report ", 1)[0]
        assert f"\n  test accuracy   {accuracy:.4f}  (top-5 " in summary, summary


def test_runs_with_other_data_settings_are_flagged(report):
    out_dir, *_ = report
    by_model = {row["model"]: row for row in read_json(out_dir / "models.json")["runs"]}
    assert by_model["cnn"]["comparable"] and by_model["resnet18"]["comparable"]
    note = by_model["mobilenet"]["comparability_note"]
    assert not by_model["mobilenet"]["comparable"]
    assert "subset_per_class 20" in note and "augmentation 'none'" in note
    markdown = (out_dir / "models.md").read_text()
    assert "Not directly comparable" in markdown and by_model["mobilenet"]["run"] in markdown


def test_a_second_comparison_never_overwrites_the_first(report, tiny_runs):
    out_dir, run_dirs, *_ = report
    again = compare_models.main([*map(str, run_dirs.values()), "--out", str(out_dir.parent)])
    assert again != out_dir and (out_dir / "models.md").is_file()


@pytest.mark.parametrize("make, fragment", [
    (lambda path: (path / "notes.txt").write_text("x"), "is not a kerasvit run folder (no config.json or env.json)"),
    (lambda path: (path / "config.json").write_text("{}"), "is not a kerasvit run folder (no env.json)"),
    (lambda path: [(path / name).write_text("{}") for name in ("config.json", "env.json")],
     "has not finished (no model.keras"),
])
def test_a_folder_that_is_not_a_run_is_refused_with_one_line(tmp_path, capsys, make, fragment):
    folder = tmp_path / "folder"
    folder.mkdir()
    make(folder)
    with pytest.raises(SystemExit) as exit_info:
        compare_models.main([str(folder), "--out", str(tmp_path / "reports")])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kerasvit.compare_models: error: ")
    assert fragment in lines[0]
    assert not (tmp_path / "reports").exists()


def test_pareto_front_by_hand():
    # (accuracy, latency ms): 0 and 2 trade off; 1 is beaten by 0; 3 is beaten by 2; 4 unknown.
    points = [(0.90, 5.0), (0.85, 6.0), (0.95, 20.0), (0.95, 25.0), (None, 1.0)]
    assert leaderboard.pareto_front(points) == [0, 2]


def test_runs_that_differ_in_their_test_subset_are_flagged():
    rows = [{"subset_per_class": 100, "test_per_class": 25, "augmentation": "none", "test_images": 250},
            {"subset_per_class": 100, "test_per_class": 25, "augmentation": "none", "test_images": 250},
            {"subset_per_class": 100, "test_per_class": 0, "augmentation": "none", "test_images": 10000}]
    reference = leaderboard.reference_settings(rows)
    assert leaderboard.comparability_note(rows[0], reference) == ""
    assert leaderboard.comparability_note(rows[2], reference) == (
        "test_per_class 0 (others 25); test_images 10000 (others 250)")


def test_reference_settings_follow_the_majority():
    rows = [{"subset_per_class": 0, "test_per_class": 0, "augmentation": "pad_crop_flip", "test_images": 10000},
            {"subset_per_class": 100, "test_per_class": 0, "augmentation": "pad_crop_flip", "test_images": 10000},
            {"subset_per_class": 0, "test_per_class": 0, "augmentation": "pad_crop_flip", "test_images": 10000}]
    reference = leaderboard.reference_settings(rows)
    assert reference["subset_per_class"] == 0
    assert leaderboard.comparability_note(rows[0], reference) == ""
    assert leaderboard.comparability_note(rows[1], reference) == "subset_per_class 100 (others 0)"


@pytest.mark.parametrize("config, training, preset", [
    ({"model": "cnn", "model_args": {}}, "scratch", None),
    ({"model": "vit_b16", "model_args": {}}, "fine-tuned", "vit_base_patch16_224_imagenet21k"),
    ({"model": "pretrained", "model_args": {"preset": "/tmp/x/tiny_resnet", "finetune": "linear"}},
     "linear probe", "tiny_resnet"),
])
def test_pretrained_runs_say_how_they_were_trained(config, training, preset):
    assert leaderboard.training_of(config) == training
    assert leaderboard.preset_of(config) == preset


def test_linear_probes_are_marked_in_the_report():
    row = {"run": "pretrained-jax-1", "model": "pretrained", "training": "linear probe",
           "preset": "resnet_18_imagenet", "rank": 1, "parameters": 11_200_000,
           "test_accuracy": 0.8, "latency_ms": 3.0, "pareto": True, "comparable": True}
    report = {"runs": [row], "reference_data_settings": {}, "timing_measured_on": ["jax on cpu"]}
    assert "**Linear probes**: 1 run(s) (`pretrained-jax-1`)" in "\n".join(leaderboard.caveats(report))
    cells = dict((name, cell(row)) for name, cell in leaderboard.MARKDOWN_COLUMNS if name == "training")
    assert cells["training"] == "linear probe (`resnet_18_imagenet`)"
    assert "(linear probe)" in leaderboard.screen_table([row])
