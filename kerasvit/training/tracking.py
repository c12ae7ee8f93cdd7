"""Weights & Biases tracking of a training run (`kerasvit.train --wandb`), through W&B's own
Keras integration.

What a run logs: the resolved config (config.json) as the W&B config; every epoch's metrics
(history.csv's columns, as `epoch/<name>`) from `WandbMetricsLogger`; at the end, the
test metrics (metrics.json) as the run summary, the test-set confusion matrix (W&B's
interactive chart) and the figures kerasvit.evaluate draws (training curves, confusion
matrix) as images.

W&B's own environment variables apply as W&B users expect: WANDB_MODE (offline logs into
the run folder for a later `wandb sync`; disabled), WANDB_PROJECT (default "kerasvit"),
WANDB_ENTITY, WANDB_NAME (default: the run folder's name), WANDB_DIR (default: the run
folder, so an offline run lands in <run>/wandb/), WANDB_TAGS (default: model and backend),
WANDB_API_KEY, ... Without --wandb nothing is imported or written.
"""

import importlib.util
import os
from pathlib import Path

from kerasvit import models
from kerasvit.errors import UserError, first_line

DEFAULT_PROJECT = "kerasvit"
INSTALL_HINT = "pip install 'kerasvit[wandb]'"


class TrackingError(UserError, RuntimeError):
    """W&B cannot be used as asked; shown as one line."""


def check_available():
    """Refuses --wandb without the package, before anything slow is imported."""
    if importlib.util.find_spec("wandb") is None:
        raise TrackingError(f"--wandb needs the wandb package, which is not installed; "
                            f"{INSTALL_HINT}")


class WandbTracker:
    """One W&B run beside one kerasvit run folder."""

    def __init__(self, run_dir, config, backend):
        import wandb

        self.wandb = wandb
        run_dir = Path(run_dir)
        # Arguments only where the user's environment says nothing: W&B lets an argument
        # override its environment variable.
        defaults = {"project": ("WANDB_PROJECT", DEFAULT_PROJECT),
                    "name": ("WANDB_NAME", run_dir.name),
                    "dir": ("WANDB_DIR", str(run_dir)),
                    "tags": ("WANDB_TAGS", [config.model, backend])}
        arguments = {key: value for key, (variable, value) in defaults.items()
                     if not os.environ.get(variable)}
        try:
            self.run = wandb.init(config=config.to_dict(), job_type="train", **arguments)
        except Exception as error:  # wandb raises UsageError, CommError, timeouts...
            raise TrackingError(
                f"W&B could not start a run ({first_line(error)}); log in (`wandb login` or "
                "WANDB_API_KEY), or set WANDB_MODE=offline to log into the run folder and "
                "`wandb sync` it later") from None

    def callbacks(self):
        """The per-epoch logger, to run after the callbacks that fill the logs."""
        from wandb.integration.keras import WandbMetricsLogger

        class EpochMetricsLogger(WandbMetricsLogger):
            # Keras 3 already puts learning_rate in the logs; W&B's own reading of the
            # optimizer's rate calls `.numpy()`, which JAX arrays lack.
            def _get_lr(self):
                return None

        return [EpochMetricsLogger(log_freq="epoch")]

    def finish(self, model, config, splits, metrics, run_dir):
        """Logs the summary, the confusion matrix and the figures, then closes the run."""
        from sklearn.metrics import confusion_matrix

        from kerasvit import CLASS_NAMES
        from kerasvit.evaluation import figures

        wandb = self.wandb
        self.run.summary.update(metrics)
        logged = {}
        history = figures.read_history(Path(run_dir) / "history.csv")
        if history:
            logged["figures/training_curves"] = wandb.Image(figures.training_curves_figure(history))
        predicted = test_predictions(model, config, splits)
        if predicted is not None:
            labels = splits["test"][1]
            logged["test/confusion_matrix"] = wandb.plot.confusion_matrix(
                y_true=labels.tolist(), preds=predicted.tolist(), class_names=list(CLASS_NAMES))
            matrix = confusion_matrix(labels, predicted, labels=range(len(CLASS_NAMES)))
            logged["figures/confusion_matrix"] = wandb.Image(
                figures.confusion_matrix_figure(matrix, CLASS_NAMES,
                                                title="Test confusion matrix (row-normalised)"))
        if logged:
            self.run.log(logged)
        self.run.finish()

    def abort(self):
        """Closes the run as failed (training raised or was interrupted)."""
        self.run.finish(exit_code=1)


def test_predictions(model, config, splits):
    """Predicted test classes, or None where they cannot be gathered in this process (a
    multi-process run: its predictions span processes)."""
    import numpy as np

    from kerasvit import distribution
    from kerasvit.data import stream

    if distribution.spans_processes() or not len(splits["test"][0]):
        return None
    size = models.feed_size(model, splits["test"][0].shape[1:3])
    dataset = stream.evaluation_dataset(*splits["test"], image_size=size,
                                        batch_size=config.batch_size)
    return np.asarray(model.predict(dataset, verbose=0)).argmax(axis=1)
