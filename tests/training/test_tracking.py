"""kerasvit.train --wandb with WANDB_MODE=offline: the W&B run folder inside the run folder,
whose history holds every epoch's metrics (as history.csv has them) and whose config is
config.json; nothing written without the flag; one line without the package."""

import json
import struct

import pytest
from cli_helpers import TINY_EPOCHS, TINY_TRAIN_FLAGS, history_rows, run_train
from optional_extras import import_extra

BLOCK = 32768  # W&B's transaction log: a LevelDB-style log of 32 KiB blocks


def wandb_records(path):
    """The protobuf records of an offline run's run-<id>.wandb file."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = 7, b""  # after the 7-byte file header
    while position + 7 <= len(data):
        left = BLOCK - position % BLOCK
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if left < 7 or (length == 0 and kind == 0):  # block trailer / padding
            position += left
            continue
        chunk = data[position + 7:position + 7 + length]
        position += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # full, first / middle, last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def read_offline_run(folder):
    """(config, history rows, summary) of an offline W&B run folder, as Python values."""
    (log,) = folder.glob("run-*.wandb")
    config, history, summary = {}, [], {}
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            config.update({item.key: json.loads(item.value_json)
                           for item in record.run.config.update})
        elif kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
        elif kind == "summary":
            summary.update({item.key: json.loads(item.value_json)
                            for item in record.summary.update if item.key})
    config.pop("_wandb", None)
    return config, history, summary


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory):
    import_extra("wandb", "pip install -e '.[wandb]'")
    cwd = tmp_path_factory.mktemp("wandb")
    run_dir = cwd / "runs" / "tiny"
    result = run_train(TINY_TRAIN_FLAGS + ["--run-dir", str(run_dir), "--wandb"], cwd,
                       WANDB_MODE="offline", WANDB_PROJECT=None, WANDB_DIR=None,
                       WANDB_NAME=None, WANDB_TAGS=None, WANDB_API_KEY=None)
    return run_dir, result


def test_offline_run_holds_epochs_and_config(wandb_run, backend):
    run_dir, result = wandb_run
    (folder,) = (run_dir / "wandb").glob("offline-run-*")
    config, history, summary = read_offline_run(folder)

    assert config == json.loads((run_dir / "config.json").read_text())
    epochs = [row for row in history if "epoch/epoch" in row]
    csv_rows = history_rows(run_dir)
    assert [row["epoch/epoch"] for row in epochs] == list(range(TINY_EPOCHS))
    assert len(csv_rows) == TINY_EPOCHS
    for logged, row in zip(epochs, csv_rows):
        for name in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
            assert logged[f"epoch/{name}"] == pytest.approx(float(row[name]), rel=1e-6)

    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "best_val_accuracy"):
        assert summary[key] == pytest.approx(metrics[key])
    assert summary["backend"] == backend
    media = folder / "files" / "media"
    assert len(list(media.rglob("confusion_matrix*.table.json"))) == 1
    figures = sorted(path.name for path in (media / "images" / "figures").glob("*.png"))
    assert len(figures) == 2
    assert figures[0].startswith("confusion_matrix_") and figures[1].startswith("training_curves_")
    assert f"wandb sync {folder}" in result.stdout + result.stderr


def test_nothing_written_without_the_flag(reference_run):
    assert not (reference_run / "wandb").exists()
    assert not list(reference_run.rglob("*.wandb"))


def test_missing_package_gives_one_line(tmp_path, monkeypatch, capsys):
    import sys

    from kerasvit.cli import train

    monkeypatch.setitem(sys.modules, "wandb", None)  # find_spec then says: not installed
    with pytest.raises(SystemExit) as exit_info:
        train.main(TINY_TRAIN_FLAGS + ["--run-dir", str(tmp_path / "run"), "--wandb"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "kerasvit.train: error: --wandb needs the wandb package, which is not installed; "
        "pip install 'kerasvit[wandb]'")
    assert not (tmp_path / "run").exists()
