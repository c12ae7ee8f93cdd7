"""Issue 8: `--time-budget` sizes the schedule so the run ends in time with its learning rate
decayed to zero; flip test-time augmentation is reported apart from plain accuracy."""

import json

import numpy as np
import pytest
from cli_helpers import (
    TINY_TRAIN_FLAGS_WITHOUT_EPOCHS,
    history_rows,
    run_cli,
    run_train,
)

from kerasvit.config import ConfigError

MEASURED = {"train_step_s": 0.5, "steps_per_epoch": 100, "eval_images_per_s": 500.0,
            "compile_s": 8.0}


def plan(budget_minutes, tta=False, measured=MEASURED, elapsed_s=20.0):
    from kerasvit.training import budget

    return budget.plan_epochs(budget_minutes=budget_minutes, elapsed_s=elapsed_s,
                              measured=measured, validation_images=5000, test_images=10_000,
                              tta=tta)


@pytest.mark.parametrize("budget_minutes", [3, 10, 30, 60])
def test_plan_uses_the_budget_without_exceeding_it(budget_minutes):
    from kerasvit.training import budget

    result = plan(budget_minutes)
    usable = budget.SAFETY_FRACTION * 60 * budget_minutes
    assert result["epochs"] >= 1
    assert result["estimated_total_s"] <= usable
    # One more epoch would not have fit: the plan does not waste the budget.
    assert result["estimated_total_s"] + result["estimated_epoch_s"] > usable


def test_longer_budgets_never_plan_fewer_epochs_and_tta_costs_time():
    epochs = [plan(minutes)["epochs"] for minutes in (5, 10, 20, 40, 80)]
    assert epochs == sorted(epochs) and epochs[-1] > epochs[0]
    assert plan(30, tta=True)["estimated_final_s"] > plan(30)["estimated_final_s"]


def test_too_short_a_budget_names_a_budget_that_is_enough():
    with pytest.raises(ConfigError, match="too short for one epoch") as error:
        plan(1.0)
    enough = float(str(error.value).split("give at least ")[1].split(" minutes")[0])
    assert plan(enough + 0.1)["epochs"] >= 1


SLOW_PLAN = {"budget_s": 600.0, "estimated_epoch_s": 100.0, "estimated_final_s": 20.0}


def test_a_run_slower_than_planned_is_told_when_it_will_end_past_its_budget():
    from kerasvit.training import budget

    on_pace = budget.overrun_warning(SLOW_PLAN, elapsed_s=230.0, epochs_done=2, epochs=5,
                                     last_epoch_s=100.0)
    assert on_pace is None  # 230 + 3 * 100 + 20 = 550 s of 600
    late = budget.overrun_warning(SLOW_PLAN, elapsed_s=300.0, epochs_done=2, epochs=5,
                                  last_epoch_s=150.0)
    assert "epoch 2 took 150 s (planned ~100 s)" in late
    assert "ends at ~12.8 min, past its 10-minute budget" in late  # 300 + 3 * 150 + 20 s


def test_budget_watch_warns_once_with_the_epoch_time_from_the_logs(capsys):
    import time

    from kerasvit.training import budget

    watch = budget.BudgetWatch(SLOW_PLAN, process_start=time.time() - 300.0, epochs=5)
    watch.on_epoch_end(0, {"epoch_time_s": 250.0})  # the first epoch also compiles: not judged
    assert capsys.readouterr().err == ""
    watch.on_epoch_end(1, {"epoch_time_s": 100.0})  # 300 + 3 * 100 + 20 = 620 s: late
    watch.on_epoch_end(2, {"epoch_time_s": 150.0})
    assert capsys.readouterr().err.count("warning: time budget") == 1


def test_budget_run_ends_in_time_with_the_schedule_finished(tmp_path):
    """The real CLI with a 150-second budget on a tiny CNN: the planned epochs are all
    trained, the learning rate ends where the schedule ends (the cnn's linear decay: at
    zero; not cut off at a high rate), and the process ends in time.
    (On JAX, start-up, data and the timing run took 34 s and compilation 6 s of it on a
    2-core CPU: a one-minute budget left room for one epoch at most. On an AVX2-only CPU,
    beside the other xdist worker, kerasvit refused 90 s as too short for one epoch and the
    test evaluation: at least 1.7 minutes.)"""
    budget_minutes = 2.5
    result = run_train([*TINY_TRAIN_FLAGS_WITHOUT_EPOCHS, "--time-budget", str(budget_minutes),
                        "--tta", "--run-dir", "budget-run"], tmp_path)
    run_dir = tmp_path / "budget-run"
    config = json.loads((run_dir / "config.json").read_text())
    planned = json.loads((run_dir / "budget.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = history_rows(run_dir)
    assert planned["epochs"] >= 2
    assert config["epochs"] == planned["epochs"] == metrics["epochs"] == len(rows)
    assert config["time_budget_minutes"] == budget_minutes
    first_lr, last_lr = float(rows[0]["learning_rate"]), float(rows[-1]["learning_rate"])
    assert last_lr == 0.0 < first_lr
    assert metrics["process_wall_time_s"] <= 60 * budget_minutes
    assert "of a 150 s budget: within it" in result.stdout
    assert 0.0 <= metrics["test_accuracy_tta"] <= 1.0
    assert "mirror" in metrics["tta_method"]


def test_flip_tta_averages_the_image_and_its_mirror(tmp_path, cifar_batch):
    """Checked against predictions made by hand on mirrored images; a mirror-symmetric
    image gets the same probabilities with and without TTA."""
    import keras

    from kerasvit import models
    from kerasvit.evaluation import classification, tta

    keras.utils.set_random_seed(1)
    model = models.build_model("cnn", widths=[8, 16, 32])
    images = cifar_batch[0][:8].astype(np.uint8)
    plain = classification.softmax(np.asarray(model.predict(images.astype("float32"), verbose=0)))
    mirrored = classification.softmax(np.asarray(model.predict(images[:, :, ::-1].astype("float32"),
                                                        verbose=0)))
    averaged = tta.flip_averaged_probabilities(model, images, batch_size=4)
    np.testing.assert_allclose(averaged, (plain + mirrored) / 2, atol=1e-5)
    assert not np.allclose(plain, mirrored, atol=1e-4)  # the mirror does change the input

    symmetric = np.concatenate([images[:, :, :16], images[:, :, :16][:, :, ::-1]], axis=2)
    symmetric_plain = classification.softmax(np.asarray(model.predict(symmetric.astype("float32"),
                                                               verbose=0)))
    np.testing.assert_allclose(tta.flip_averaged_probabilities(model, symmetric, 4),
                               symmetric_plain, atol=1e-5)


def test_evaluate_reports_tta_apart_from_plain_accuracy(tiny_cnn_run, tmp_path):
    _, _, run_dir = tiny_cnn_run
    out = tmp_path / "report"
    run_cli("evaluate", [run_dir, "--out", out, "--tta", "--test-images", "200",
                         "--timing-repeats", "1"], tmp_path)
    evaluation = json.loads((out / "metrics.json").read_text())["evaluation"]
    assert set(evaluation["tta"]) == {"method", "accuracy", "top5_accuracy", "f1_macro"}
    assert 0.0 <= evaluation["tta"]["accuracy"] <= 1.0
    assert "accuracy" in evaluation  # plain accuracy stays where it was
    report = (out / "report.md").read_text()  # TTA's own rows, naming the views it averaged
    assert f"| test accuracy with TTA | {evaluation['tta']['accuracy']:.4f} |" in report
    assert f"| TTA | {evaluation['tta']['method']} |" in report


@pytest.mark.parametrize("name", ["cnn_fast", "vit_fast"])
def test_budget_configs_load_and_set_a_budget(name):
    from kerasvit import config, models

    loaded = config.validate(config.load_config_file(config.CONFIG_DIR / f"{name}.toml"))
    config.check_model_args(loaded, models.get_spec(loaded.model).builder)
    assert loaded.time_budget_minutes > 0 and loaded.test_time_augmentation
