"""The Keras contenders (imported only inside a worker, after KERAS_BACKEND is set).

Each contender is kerasvit's own model, compiled by `kerasvit.training.recipe.compile_model` (the
config's optimizer and schedule, label-smoothed loss and metrics of `python -m
kerasvit.train`) with the contender's precision and jit_compile, and trained through
`model.fit` on a tf.data dataset as kerasvit.train feeds it. Previews build kerasvit's model
with one change (see bench/contenders.py).
"""

import time

import keras
import numpy as np

from kerasvit.config import config_from_dict
from kerasvit.training import precision, recipe


class StepTimer(keras.callbacks.Callback):
    """Wall time between consecutive training-step ends, the device synced at each end
    (`float(loss)` blocks until the step has finished, on every backend).

    Interval timing, not begin->end, so that every backend's time includes fetching the
    batch: TF pulls it inside the train function, JAX and torch before
    `on_train_batch_begin`. The first interval also holds fit()'s start-up; drop it."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_begin(self, logs=None):
        self.last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now


def count_params(model):
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return trainable, frozen


def build_vit_fused_attention(**model_args):
    """kerasvit's build_vit with TransformerBlocks that ask MultiHeadAttention for the
    scores only when the caller wants them (explain), so training and inference take
    Keras' ops.dot_product_attention path (torch SDPA, fused attention on JAX)."""
    import kerasvit.models.vit as vit_module
    from kerasvit.models.vit_layers import TransformerBlock

    class FusedAttentionBlock(TransformerBlock):
        def call(self, x, training=None, return_attention_scores=False):
            if return_attention_scores:
                return super().call(x, training=training, return_attention_scores=True)
            normed = self.norm_1(x)
            attended = self.attention(normed, normed, training=training)
            x = x + self.drop_path(self.dropout(attended, training=training), training)
            hidden = self.mlp_out(self.dropout(self.mlp_in(self.norm_2(x)), training=training))
            return x + self.drop_path(self.dropout(hidden, training=training), training)

    original = vit_module.TransformerBlock
    vit_module.TransformerBlock = FusedAttentionBlock  # only while this model is built
    try:
        return vit_module.build_vit(**model_args)
    finally:
        vit_module.TransformerBlock = original


def build_vit_b16(arch, num_classes=10):
    """kerasvit's vit_b16 architecture (keras-hub ViTImageClassifier on a ViTBackbone,
    logits, no dropout) with random weights: built from arguments, no preset download.
    No preprocessor: the benchmark feeds already scaled 224x224 images to every contender.

    The head is float32, as in kerasvit's cnn and vit. (kerasvit's own vit_b16 builder leaves
    keras-hub's default, the backbone's policy: under mixed_bfloat16 its logits are bf16 and
    TensorFlow's top-5 metric fails at the first step, "Input 'predictions' of 'InTopKV2' Op
    has type bfloat16"; a 768x10 layer's precision does not change the speed.)"""
    import keras_hub

    arch = dict(arch)
    arch["image_shape"] = tuple(arch["image_shape"])
    backbone = keras_hub.models.ViTBackbone(**arch)
    return keras_hub.models.ViTImageClassifier(
        backbone=backbone, num_classes=num_classes, activation=None, dropout=0.0,
        preprocessor=None, head_dtype="float32")


def build_model(spec, contender):
    from kerasvit import models

    model_name = spec["model"]
    if model_name == "vit_b16":
        return build_vit_b16(spec["arch"])
    args = dict(spec["config"]["model_args"])
    if contender.get("data_format"):
        args["data_format"] = contender["data_format"]
    change = contender.get("change")
    if change == "fused_attention":
        return build_vit_fused_attention(**args)
    return models.build_model(model_name, **args)


class KerasContender:
    def __init__(self, spec, contender, dataset, eval_batches, backend):
        self.spec = spec
        self.contender = contender
        self.dataset = dataset
        self.eval_batches = eval_batches
        self.eval_index = 0
        self.mixed = contender["precision"] == "bf16"
        config = config_from_dict(spec["config"])
        config.jit_compile = "on" if contender["jit"] else "off"
        config.mixed_precision = "on" if self.mixed else "off"
        with self.policy():
            keras.utils.set_random_seed(0)
            self.model = build_model(spec, contender)
            recipe.compile_model(self.model, config, steps_per_epoch=1000, backend=backend)
        self.jit_compile = bool(self.model.jit_compile)

    def policy(self):
        """kerasvit.train sets the global policy once per process; here several models share
        a process, so each contender's calls run under its own policy."""
        contender = self

        class Scope:
            def __enter__(self):
                precision.set_precision("on" if contender.mixed else "off")

            def __exit__(self, *exc):
                precision.set_precision("off")

        return Scope()

    def info(self):
        trainable, frozen = count_params(self.model)
        return {"params": {"trainable": trainable, "non_trainable": frozen,
                           "total": trainable + frozen},
                "jit_compile_resolved": self.jit_compile,
                "dtype_policy": "mixed_bfloat16" if self.mixed else "float32"}

    def train(self, steps):
        timer = StepTimer()
        with self.policy():
            self.model.fit(self.dataset, epochs=1, steps_per_epoch=steps, verbose=0,
                           callbacks=[timer], shuffle=False)
        return timer.times

    def evaluate(self, steps):
        """kerasvit.evaluate's throughput measure: predict_on_batch on in-memory images
        (returns numpy, so each call includes the device sync)."""
        times = []
        with self.policy():
            for _ in range(steps):
                batch = self.eval_batches[self.eval_index % len(self.eval_batches)]
                self.eval_index += 1
                start = time.perf_counter()
                self.model.predict_on_batch(batch)
                times.append(time.perf_counter() - start)
        return times


def make_dataset(x, y, batch_size):
    """Pre-made real (augmented) batches, repeated, through tf.data as kerasvit feeds fit."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    return dataset.batch(batch_size, drop_remainder=True).repeat().prefetch(tf.data.AUTOTUNE)
