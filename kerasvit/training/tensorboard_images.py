"""A TensorBoard image of the validation confusion matrix at the end of training.

Keras' TensorBoard callback logs scalars only; this adds the figure that evaluate writes as
confusion_matrix.png, so it shows up in `tensorboard --logdir runs` on every backend (the
summary is written with tensorflow.summary, which the TensorBoard callback needs anyway).

Under `--distribute data_parallel` (a keras.distribution on JAX) `model.predict` on numpy
images cannot serve: with several processes every process would feed its whole numpy batch as
its slice of one global batch, and the sharded predictions span devices that no single process
can read. DataParallel replicates every weight on every device, so each process holds the
whole model: process 0 predicts on its own first device from its local copy of the weights
(one jitted `stateless_call`, no collectives, nothing asked of the other processes), writes
the image, and the other processes skip it.
"""

import warnings
from pathlib import Path

import keras
import numpy as np

from kerasvit import CLASS_NAMES, models

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
        if not is_first_process():
            return  # Process 0 writes the run's image; the others' folders are worker logs.
        # A failure here must not lose the finished training (the model is saved after
        # fit returns), so it becomes a warning.
        try:
            self.write_image()
        except Exception as error:  # noqa: BLE001  (any failure: warn, keep the run)
            warnings.warn(f"confusion-matrix image not written to TensorBoard: "
                          f"{type(error).__name__}: {error}", stacklevel=2)

    def write_image(self):
        import tensorflow as tf
        from sklearn import metrics

        from kerasvit.data import stream
        from kerasvit.evaluation import figures

        budget = image_budget(models.image_size(self.model))
        images, labels = self.images[:budget], self.labels[:budget]
        batch = stream.prepare_images(images, models.feed_size(self.model, images.shape[1:3]))
        predicted = np.asarray(predict_logits(self.model, batch, self.batch_size)).argmax(-1)
        matrix = metrics.confusion_matrix(labels, predicted, labels=np.arange(len(CLASS_NAMES)))
        figure = figures.confusion_matrix_figure(
            matrix, CLASS_NAMES,
            title=f"{self.split} confusion matrix, {len(labels)} images "
                  f"(accuracy {np.mean(predicted == labels):.3f})")
        png = tf.image.decode_png(figures.figure_png_bytes(figure), channels=4)
        writer = tf.summary.create_file_writer(str(self.log_dir))
        with writer.as_default():
            tf.summary.image("confusion_matrix", png[None], step=self.last_epoch)
        writer.close()
        return matrix


def is_first_process():
    """False on processes 1..N-1 of a multi-host JAX run (keras.distribution.initialize)."""
    if keras.backend.backend() != "jax":
        return True
    import jax

    return jax.process_index() == 0


def predict_logits(model, images, batch_size):
    """The model's outputs for numpy `images`: `model.predict`, or under a keras.distribution
    `predict_on_local_device` (see the module docstring)."""
    if keras.distribution.distribution() is None:
        return model.predict(images, batch_size=batch_size, verbose=0)
    return predict_on_local_device(model, images, batch_size)


def predict_on_local_device(model, images, batch_size):
    """Predicts on this process's first device (JAX only) with that device's copy of the
    weights; needs every weight replicated there, as `DataParallel` keeps them."""
    import jax

    device = jax.local_devices()[0]

    def local_copy(variable):
        value = variable.value
        for shard in value.addressable_shards:
            if shard.device == device and shard.data.shape == value.shape:
                return shard.data  # The whole weight, already on `device`: no copy.
        if value.is_fully_addressable:
            return jax.device_put(value, device)
        raise ValueError(f"weight {variable.path} is not whole on {device} (sharded over "
                         f"the devices); cannot predict on one device")

    trainable = [local_copy(v) for v in model.trainable_variables]
    non_trainable = [local_copy(v) for v in model.non_trainable_variables]

    @jax.jit
    def forward(trainable, non_trainable, x):
        outputs, _ = model.stateless_call(trainable, non_trainable, x, training=False)
        return outputs

    return np.concatenate([
        np.asarray(forward(trainable, non_trainable,
                           jax.device_put(images[start:start + batch_size], device)))
        for start in range(0, len(images), batch_size)])
