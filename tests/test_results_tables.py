"""The README's accuracy tables are generated from results/ (scripts/results_tables.py)."""

import json
from pathlib import Path

from cli_helpers import load_script

REPO = Path(__file__).resolve().parent.parent


def test_readme_tables_match_the_committed_results():
    script = load_script("results_tables")
    readme = (REPO / "README.md").read_text()
    assert script.with_tables(readme, script.blocks()) == readme, (
        "README.md's results tables are stale: run python scripts/results_tables.py --write")


def test_a_run_is_named_by_its_config_file_and_what_it_changed(tmp_path):
    script = load_script("results_tables")
    config = json.loads((REPO / "results/cnn/cnn-tf-s0/config.json").read_text())
    assert script.recipe_name(config) == "cnn_airbench94.toml"
    config.update(batch_size=512, seed=7)  # the seed says which run, not which recipe
    assert script.recipe_name(config) == "cnn_airbench94.toml batch_size=512"
    batch_2000 = json.loads((REPO / "results/cnn/cnn-muon-torch-s0/config.json").read_text())
    assert script.recipe_name(batch_2000) == "cnn_b2000.toml"
    default = json.loads((REPO / "results/cnn/cnn-b1000-torch-s2/config.json").read_text())
    assert script.recipe_name(default) == "cnn.toml"


def test_seeds_of_one_recipe_are_summarised_as_mean_and_spread(tmp_path):
    script = load_script("results_tables")
    source = REPO / "results/cnn/cnn-torch-s0"
    for seed, accuracy in ((0, 0.80), (1, 0.90)):
        run = tmp_path / f"run-{seed}"
        run.mkdir()
        config = json.loads((source / "config.json").read_text()) | {"seed": seed}
        metrics = json.loads((source / "metrics.json").read_text()) | {"test_accuracy": accuracy}
        (run / "config.json").write_text(json.dumps(config))
        (run / "env.json").write_text((source / "env.json").read_text())
        (run / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "unfinished").mkdir()  # no metrics.json: left out
    summary = script.table(tmp_path).splitlines()[-1]
    assert summary.startswith("| cnn_airbench94.toml | torch | 2 | 85.00 +- 7.07 |"), summary
