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
    """At the end of training, predicts (up to a budget of) the given images and writes the
    row-normalised confusion matrix to `log_dir` as the TensorBoard image `confusion_matrix`."""

    def __init__(self, log_dir, images, labels, split="validation", batch_size=256):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.images, self.labels, self.split = images, labels, split
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

    def write_image(self):
        import tensorflow as tf

        from kerasvit import data, reports

        image_size = self.model.input_shape[1:3]
        budget = image_budget(image_size)
        images, labels = self.images[:budget], self.labels[:budget]
        batch = data.prepare_images(images, image_size)
        logits = self.model.predict(batch, batch_size=self.batch_size, verbose=0)
        metrics = reports.classification_metrics(labels, reports.softmax(logits), CLASS_NAMES)
        figure = reports.confusion_matrix_figure(
            metrics["confusion_matrix"], CLASS_NAMES,
            title=f"{self.split} confusion matrix, {len(labels)} images "
                  f"(accuracy {metrics['accuracy']:.3f})")
        png = tf.image.decode_png(reports.figure_png_bytes(figure), channels=4)
        writer = tf.summary.create_file_writer(str(self.log_dir))
        with writer.as_default():
            tf.summary.image("confusion_matrix", png[None], step=self.last_epoch)
        writer.close()
        return np.asarray(metrics["confusion_matrix"])
