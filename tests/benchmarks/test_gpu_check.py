"""bench/gpu_check.py's comparison of GPU outputs with their reload on the CPU, and its report
(the GPU runs themselves need a CUDA machine: README "On a GPU")."""

import numpy as np

from bench import gpu_check


def save_outputs(path, probabilities, heat_map):
    np.savez(path, probabilities=np.asarray(probabilities, "float32"),
             map=np.asarray(heat_map, "float32"))


def test_reload_comparison_counts_changed_predictions_and_map_agreement(tmp_path):
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(10), size=8)
    heat_map = rng.random((8, 4, 4))
    save_outputs(tmp_path / "torch-cnn-gpu.npz", probabilities, heat_map)
    save_outputs(tmp_path / "torch-cnn-cpu-torch.npz", probabilities, heat_map)
    flipped = probabilities.copy()
    flipped[0] = np.roll(flipped[0], 1)  # another class wins for the first image
    save_outputs(tmp_path / "torch-cnn-cpu-jax.npz", flipped, -heat_map)

    rows = {row["reloaded_on"]: row for row in gpu_check.compare_reloads(tmp_path)}

    assert rows["torch (cpu)"]["same_predictions"] == 8
    assert rows["torch (cpu)"]["max_probability_difference"] == 0
    assert rows["torch (cpu)"]["map_correlation"] > 0.9999
    assert rows["jax (cpu)"]["same_predictions"] == 7
    assert rows["jax (cpu)"]["max_probability_difference"] > 0
    assert rows["jax (cpu)"]["map_correlation"] < -0.9999


def test_report_shows_a_failed_check_as_its_error_line():
    report = {
        "created": "now", "command": "gpu_check",
        "gpu": {"jax": {"devices": ["gpu:0"], "checks": {
            "cnn-fp32": {"epochs": 2, "train_images": 100, "loss_before": 2.3,
                         "train_loss_per_epoch": [2.0, 1.5], "test_accuracy": 0.4,
                         "train_images_per_s": 1000.0, "eval_images_per_s": 2000.0,
                         "first_step_s": 3.0},
            "vit_b16-fp32": {"error": "ImportError: needs grain"}}}},
        "reloads": [],
    }
    text = gpu_check.markdown(report)
    assert "## jax on gpu:0" in text
    assert "| cnn-fp32 | 2 x 100 | 2.300 -> 1.500 | 0.400 | 1000 | 2000 | 3.0 |" in text
    assert "| vit_b16-fp32 | failed: ImportError: needs grain |" in text
