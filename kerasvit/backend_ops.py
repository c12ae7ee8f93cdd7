"""The only backend-specific code in kerasvit: gradients, torch's device list, and the
image layout each backend's convolutions run fastest.

Keras 3 has no backend-neutral gradient API, so each backend gets one small function with
the same signature, and `class_score_gradients` picks one by `keras.backend.backend()`.
Import only after the backend is fixed (`kerasvit.cli.check_backend`).
"""

import keras
import numpy as np


def class_score_gradients(model, inputs, class_indices):
    """Gradient of each sample's class score (the logit `class_indices[i]` of sample i) with
    respect to that sample's input, in inference mode.

    Returns (logits, gradients) as numpy arrays; gradients have the shape of `inputs`.
    Samples do not interact in inference mode, so the gradient of the summed scores is each
    sample's own gradient.
    """
    inputs = np.asarray(inputs, dtype="float32")
    one_hot = keras.ops.one_hot(np.asarray(class_indices), model.output_shape[-1])
    backend = keras.backend.backend()
    if backend not in GRADIENT_FUNCTIONS:
        raise NotImplementedError(f"gradients are not implemented for the {backend} backend")
    logits, gradients = GRADIENT_FUNCTIONS[backend](model, inputs, one_hot)
    return keras.ops.convert_to_numpy(logits), keras.ops.convert_to_numpy(gradients)


def summed_class_score(logits, one_hot):
    return keras.ops.sum(logits * keras.ops.cast(one_hot, logits.dtype))


def tensorflow_gradients(model, inputs, one_hot):
    import tensorflow as tf

    inputs = tf.convert_to_tensor(inputs)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        logits = model(inputs, training=False)
        score = summed_class_score(logits, one_hot)
    return logits, tape.gradient(score, inputs)


def jax_gradients(model, inputs, one_hot):
    import jax

    # stateless_call keeps the trace pure: the weights go in as arguments, not as state.
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def score_and_logits(x):
        logits, _ = model.stateless_call(trainable, non_trainable, x, training=False)
        return summed_class_score(logits, one_hot), logits

    gradients, logits = jax.grad(score_and_logits, has_aux=True)(jax.numpy.asarray(inputs))
    return logits, gradients


def torch_gradients(model, inputs, one_hot):
    import torch

    inputs = keras.ops.convert_to_tensor(inputs).detach().requires_grad_(True)
    logits = model(inputs, training=False)
    score = summed_class_score(logits, one_hot)
    (gradients,) = torch.autograd.grad(score, inputs)
    return logits.detach(), gradients


GRADIENT_FUNCTIONS = {
    "tensorflow": tensorflow_gradients,
    "jax": jax_gradients,
    "torch": torch_gradients,
}


def torch_devices():
    """Keras' device names for the torch backend, which has no `keras.distribution` to list
    them: where Keras puts its tensors (KERAS_TORCH_DEVICE, else CUDA when torch sees it)."""
    import torch

    kind = keras.ops.zeros(()).device.type
    if kind == "cuda":
        return [f"gpu:{index}" for index in range(torch.cuda.device_count())]
    return [f"{kind}:0"]


# Measured with bench/throughput.py (`keras-torch-*` against `keras-torch-*-channels-last`,
# then named preview-keras-torch-*-channels-first and keras-torch-*; the cnn at batch 2,000,
# bf16, 2-core CPU; results/bench/cnn-layout-torch.md): Keras on torch permutes NHWC
# to NCHW and back around every convolution and pool, a third of the cnn's step; in
# channels_first it trained 1.47x and evaluated 1.9x faster. TensorFlow's CPU kernels and
# XLA take NHWC (TF pools channels_first by transposing); on JAX channels_first trained at
# 0.88x and evaluated at 0.78x of channels_last (results/bench/cnn-jax-layout-avx2.md).
FASTEST_DATA_FORMAT = {"torch": "channels_first"}


def fastest_data_format():
    """The image layout ("channels_first" / "channels_last") a convolutional model should
    compute in on this backend."""
    return FASTEST_DATA_FORMAT.get(keras.backend.backend(), "channels_last")
