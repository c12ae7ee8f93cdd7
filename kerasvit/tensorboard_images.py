"""A TensorBoard image of the validation confusion matrix at the end of training.

Keras' TensorBoard callback logs scalars only; this adds the figure that evaluate writes as
confusion_matrix.png, so it shows up in `tensorboard --logdir runs` on every backend (the
summary is written with tensorflow.summary, which the TensorBoard callback needs anyway).
"""

import warnings
from pathlib import Path

import keras
import numpy as np

from kerasvit import CLASS_NAMES

# Predicting the whole validation split at 224x224 (vit_b16) would take many minutes on a
# CPU; the image budget scales down with the input area (2,000 images at 32x32).
IMAGES_AT_32PX = 2000
MIN_IMAGES = 100


def image_budget(image_size):
    area_ratio = (32 * 32) / (image_size[0] * image_size[1])
    return max(MIN_IMAGES, int(IMAGES_AT_32PX * area_ratio))


class ConfusionMatrixImage(keras.callbacks.Callback):
    """At the end of training, predicts the run's validation images (the split training
    used, rebuilt from the run's config.json; the cached dataset load makes this cheap) and
    writes the row-normalised confusion matrix to `<run>/tensorboard/validation` as the
    image `confusion_matrix`."""

    def __init__(self, run_dir, batch_size=256):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.batch_size = batch_size
        self.last_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        self.last_epoch = epoch

    def on_train_end(self, logs=None):
        # A failure here must not lose the finished training (the model is saved after
        # fit returns), so it becomes a warning.
        try:
            self.write_image()
        except Exception as error:  # noqa: BLE001  (any failure: warn, keep the run)
            warnings.warn(f"confusion-matrix image not written to TensorBoard: "
                          f"{type(error).__name__}: {error}", stacklevel=2)

    def validation_images(self):
        from kerasvit import data, runs

        config = runs.read_json(self.run_dir / "config.json")
        splits = data.load_splits(config.get("data_dir", ""), config["validation_size"],
                                  config["subset_per_class"])
        split = "validation" if len(splits["validation"][0]) else "test"
        images, labels = splits[split]
        budget = image_budget(self.model.input_shape[1:3])
        return images[:budget], labels[:budget], split

    def write_image(self):
        import tensorflow as tf

        from kerasvit import data, reports

        images, labels, split = self.validation_images()
        batch = data.prepare_images(images, self.model.input_shape[1:3])
        logits = self.model.predict(batch, batch_size=self.batch_size, verbose=0)
        metrics = reports.classification_metrics(labels, reports.softmax(logits), CLASS_NAMES)
        figure = reports.confusion_matrix_figure(
            metrics["confusion_matrix"], CLASS_NAMES,
            title=f"{split} confusion matrix, {len(labels)} images "
                  f"(accuracy {metrics['accuracy']:.3f})")
        png = tf.image.decode_png(reports.figure_png_bytes(figure), channels=4)
        writer = tf.summary.create_file_writer(str(self.run_dir / "tensorboard" / "validation"))
        with writer.as_default():
            tf.summary.image("confusion_matrix", png[None], step=self.last_epoch)
        writer.close()
        return np.asarray(metrics["confusion_matrix"])
