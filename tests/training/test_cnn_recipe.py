"""The CNN recipe's pieces (issue 18): patch whitening, the identity init, the optimizer's
per-variable learning rates, decay and freezing, lookahead, the schedule, alternating flips,
the 6-view TTA, precision "auto"; and the recipe learning on held-out real images."""

import keras
import numpy as np
import pytest

from kerasvit.config import TrainConfig, load_config_file
from kerasvit.data import stream
from kerasvit.evaluation import tta
from kerasvit.models.cnn import SPEC, build_cnn
from kerasvit.models.cnn_layers import (
    PartialIdentity,
    PatchWhitening,
    adapt_whitening_layers,
    image_patches,
)
from kerasvit.runs import environment
from kerasvit.training import loop, optimizers, precision, recipe


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


# ------------------------------------------------------------------ patch whitening

def whitened_covariance(images, epsilon):
    layer = PatchWhitening(kernel_size=2, epsilon=epsilon)
    layer.build(images.shape)
    layer.adapt(images)
    outputs = to_numpy(layer(images)).reshape(-1, 24).astype(np.float64)
    first, second = outputs[:, :12], outputs[:, 12:]
    np.testing.assert_allclose(second, -first, atol=1e-4)  # the negated filters
    return first.T @ first / len(first)


def test_whitening_layer_whitens_the_training_patches(cifar_batch):
    images = (cifar_batch[0] - 120.0) / 64.0
    np.testing.assert_allclose(whitened_covariance(images, 1e-9), np.eye(12), atol=2e-3)
    # airbench's epsilon damps the weakest directions: diag(eigenvalue / (eigenvalue + eps)).
    covariance = whitened_covariance(images, 5e-4)
    patches = image_patches(images.astype(np.float64), 2)
    eigenvalues = np.linalg.eigvalsh(patches.T @ patches / len(patches))[::-1]
    np.testing.assert_allclose(covariance, np.diag(eigenvalues / (eigenvalues + 5e-4)), atol=1e-3)


def test_whitening_kernel_is_fixed_and_its_bias_trains():
    layer = PatchWhitening()
    layer.build((None, 32, 32, 3))
    assert [v.name for v in layer.trainable_weights] == ["bias"]
    assert [v.name for v in layer.non_trainable_weights] == ["kernel"]
    assert tuple(layer.kernel.shape) == (2, 2, 3, 24)


def test_whitening_is_set_from_training_images_chosen_by_the_seed(cifar_batch):
    images = cifar_batch[0]
    kernels = []
    for seed in (0, 0, 1):
        model = build_cnn(widths=(8, 8, 8))
        assert adapt_whitening_layers(model, images, seed, num_images=50) == (["whiten"], 50)
        kernels.append(to_numpy(model.get_layer("whiten").kernel))
    np.testing.assert_array_equal(kernels[0], kernels[1])
    assert not np.allclose(kernels[0], kernels[2], atol=1e-6)  # another seed, other images
    untouched = to_numpy(build_cnn(widths=(8, 8, 8)).get_layer("whiten").kernel)
    model = build_cnn(widths=(8, 8, 8))
    loop.initialize_from_data(model, images, seed=0)  # what every fresh run does first
    assert not np.allclose(to_numpy(model.get_layer("whiten").kernel), untouched)


def test_both_layouts_compute_the_same_network(cifar_batch, requires_channels_first):
    """channels_first (torch's "auto") and channels_last: the same whitening kernel from
    the same images, the same weights in the same order, the same logits, and an NHWC
    feature map for Grad-CAM in both."""
    images = cifar_batch[0][:32]
    last = build_cnn(widths=(8, 8, 8), data_format="channels_last")
    first = build_cnn(widths=(8, 8, 8), data_format="channels_first")
    for model in (last, first):
        adapt_whitening_layers(model, images, seed=0, num_images=50)
    np.testing.assert_allclose(to_numpy(first.get_layer("whiten").kernel),
                               to_numpy(last.get_layer("whiten").kernel), atol=1e-5)
    assert [w.shape for w in first.weights] == [w.shape for w in last.weights]
    first.set_weights(last.get_weights())
    np.testing.assert_allclose(to_numpy(first(images)), to_numpy(last(images)), atol=1e-4)
    feature_layer = SPEC.gradcam_layer(first)
    assert feature_layer == "layout_out"
    assert tuple(first.get_layer(feature_layer).output.shape) == (None, 3, 3, 8)


def test_auto_layout_is_the_backends_fastest():
    model = build_cnn(widths=(8, 8, 8))
    expected = "channels_first" if keras.backend.backend() == "torch" else "channels_last"
    assert model.get_layer("whiten").data_format == expected
    assert model.get_layer("block1_a_conv").data_format == expected
    with pytest.raises(ValueError, match="data_format 'nchw' is not one of auto"):
        build_cnn(data_format="nchw")


def test_partial_identity_starts_the_first_channels_as_the_identity():
    kernel = to_numpy(PartialIdentity(seed=1)((3, 3, 4, 6)))
    for channel in range(4):
        expected = np.zeros((3, 3, 4))
        expected[1, 1, channel] = 1.0
        np.testing.assert_array_equal(kernel[..., channel], expected)
    bound = 1 / np.sqrt(3 * 3 * 4)
    assert np.abs(kernel[..., 4:]).max() <= bound and np.abs(kernel[..., 4:]).std() > 0
    assert PartialIdentity.from_config(PartialIdentity(seed=3).get_config()).seed == 3


# ------------------------------------------------------------------ optimizer and schedule

def test_airbench_hyperparameters_match_a_hand_computation():
    step_size, decay = optimizers.airbench_hyperparameters(11.5, 0.0153, 0.85, 1024)
    # airbench94: lr = 11.5 / (1024 * (1 + 1 / 0.15)) per summed example; x1024 for a mean.
    assert step_size == pytest.approx(11.5 / (1024 * (1 + 1 / 0.15)) * 1024)
    assert step_size == pytest.approx(1.5, abs=1e-3)
    assert decay == pytest.approx(0.0153 / 11.5)
    # Per-step shrinkage: weight_decay * batch / kilostep_scale, whatever the lr.
    assert step_size * decay == pytest.approx(0.0153 * 1024 / (1024 * (1 + 1 / 0.15)))


def reference_sgd(weights, gradients, lr, momentum, decay, scale, train_steps=None):
    """torch.optim.SGD(nesterov=True) with weight_decay = decay / scale, lr = lr * scale;
    `lr` is a number or a function of the step."""
    w, buf = weights.copy(), np.zeros_like(weights)
    for step, g in enumerate(gradients):
        if train_steps is not None and step >= train_steps:
            continue
        d = g + decay / scale * w
        buf = momentum * buf + d
        w = w - (lr(step) if callable(lr) else lr) * scale * (d + momentum * buf)
    return w


def run_optimizer(optimizer, initial, gradients):
    variables = [keras.Variable(value, name=name) for name, value in initial.items()]
    for step_gradients in gradients:
        optimizer.apply([keras.ops.convert_to_tensor(g) for g in step_gradients], variables)
    return [to_numpy(v) for v in variables]


def test_optimizer_per_variable_rates_decay_and_freezing_match_torch_sgd():
    rng = np.random.default_rng(0)
    initial = {"kernel": rng.normal(size=(3, 2)).astype("float32"),
               "beta": rng.normal(size=(2,)).astype("float32"),
               "bias": rng.normal(size=(2,)).astype("float32")}
    steps = [[rng.normal(size=v.shape).astype("float32") for v in initial.values()]
             for _ in range(6)]
    optimizer = optimizers.LookaheadNesterovSGD(
        learning_rate=0.1, momentum=0.85, weight_decay=0.01, scaled_variable_names=["beta"],
        scaled_learning_rate=4.0, frozen_after_steps={"bias": 3})
    kernel, beta, bias = run_optimizer(optimizer, initial, steps)
    grads = list(zip(*steps))
    np.testing.assert_allclose(kernel, reference_sgd(initial["kernel"], grads[0], 0.1, 0.85, 0.01, 1.0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(beta, reference_sgd(initial["beta"], grads[1], 0.1, 0.85, 0.01, 4.0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias, reference_sgd(initial["bias"], grads[2], 0.1, 0.85, 0.01, 1.0,
                                                   train_steps=3), rtol=1e-5, atol=1e-6)


def test_a_fading_variable_leaves_the_schedule_and_falls_linearly_to_zero():
    """airbench94_muon's whitening bias: the offsets' rate, from the schedule's first rate
    down to zero at its step (4 here), its decay fading with it; the rest on the schedule."""
    rng = np.random.default_rng(5)
    initial = {"kernel": rng.normal(size=(3, 2)).astype("float32"),
               "bias": rng.normal(size=(2,)).astype("float32")}
    steps = [[rng.normal(size=v.shape).astype("float32") for v in initial.values()]
             for _ in range(6)]
    schedule = optimizers.TriangularSchedule(0.1, total_steps=6, warmup_steps=0,
                                             start_factor=1.0, end_factor=0.0)
    optimizer = optimizers.LookaheadNesterovSGD(
        learning_rate=schedule, momentum=0.85, weight_decay=0.01,
        scaled_variable_names=["whiten/bias"], scaled_learning_rate=4.0,
        fading_after_steps={"whiten/bias": 4})
    with keras.name_scope("whiten"):  # the path the layer's variable has in a model
        bias = keras.Variable(initial["bias"], name="bias")
    variables = [keras.Variable(initial["kernel"], name="kernel"), bias]
    for step_gradients in steps:
        optimizer.apply([keras.ops.convert_to_tensor(g) for g in step_gradients], variables)
    grads = list(zip(*steps))
    np.testing.assert_allclose(
        to_numpy(variables[0]),
        reference_sgd(initial["kernel"], grads[0], lambda t: float(to_numpy(schedule(t))),
                      0.85, 0.01, 1.0),
        rtol=1e-5, atol=1e-6)
    faded = reference_sgd(initial["bias"], grads[1], lambda t: 0.1 * max(0.0, 1 - t / 4),
                          0.85, 0.01, 4.0)
    np.testing.assert_allclose(to_numpy(variables[1]), faded, rtol=1e-5, atol=1e-6)


def test_a_fading_variable_trains_inside_a_compiled_fit():
    """On TensorFlow the optimizer builds inside the traced train step, so what it computes
    there must not need eager values (CI failed on that once)."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, name="head")])
    schedule = optimizers.TriangularSchedule(0.1, total_steps=4, warmup_steps=1)
    optimizer = optimizers.LookaheadNesterovSGD(
        learning_rate=schedule, fading_after_steps={model.layers[0].bias.path: 2})
    model.compile(optimizer=optimizer, loss="mse")
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    bias_before = to_numpy(model.layers[0].bias).copy()
    model.fit(x, x[:, :1], batch_size=2, epochs=1, verbose=0)
    bias_after_fading = to_numpy(model.layers[0].bias)
    assert not np.allclose(bias_after_fading, bias_before)  # it trained while its rate lasted
    model.fit(x, x[:, :1], batch_size=2, epochs=1, verbose=0)
    np.testing.assert_array_equal(to_numpy(model.layers[0].bias), bias_after_fading)  # then none


@pytest.mark.parametrize("schedule, fading", [("stop", False), ("fade", True)])
def test_the_recipe_stops_or_fades_the_whitening_bias(schedule, fading):
    config = TrainConfig(optimizer="nesterov_sgd", epochs=4, schedule="linear_decay",
                         whitening_bias_epochs=1.5, whitening_bias_schedule=schedule,
                         bias_lr_scale=64.0)
    model = build_cnn(widths=(8, 8, 8))
    optimizer = recipe.make_optimizer(model, config, steps_per_epoch=10)
    bias_path = model.get_layer("whiten").bias.path
    assert optimizer.fading_after_steps == ({bias_path: 15} if fading else {})
    assert optimizer.frozen_after_steps == ({} if fading else {bias_path: 15})
    assert (bias_path in optimizer.scaled_variable_names) == fading


def test_lookahead_pulls_the_weights_to_the_slow_copy_on_schedule():
    rng = np.random.default_rng(1)
    initial = rng.normal(size=(4,)).astype("float32")
    gradients = [[rng.normal(size=4).astype("float32")] for _ in range(7)]
    optimizer = optimizers.LookaheadNesterovSGD(learning_rate=0.1, momentum=0.5,
                                                lookahead_every=3, total_steps=7)
    (result,) = run_optimizer(optimizer, {"w": initial}, gradients)
    # By hand: fast SGD steps; at steps 3 and 6 slow = a*slow + (1-a)*w, w = slow with
    # a = 0.95^5 * (step/7)^3; at the last step (7, off the schedule) w takes the slow copy.
    w, slow, buf = initial.astype(np.float64), initial.astype(np.float64), np.zeros(4)
    for step, (g,) in enumerate(gradients, start=1):
        buf = 0.5 * buf + g
        w = w - 0.1 * (g + 0.5 * buf)
        if step % 3 == 0:
            a = 0.95**5 * (step / 7) ** 3
            slow = a * slow + (1 - a) * w
            w = slow.copy()
        elif step == 7:
            w = slow.copy()
    np.testing.assert_allclose(result, w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result, to_numpy(optimizer.slow_weights[0]), atol=1e-7)


def newton_schulz_by_hand(g, steps=3):
    """airbench94_muon's zeropower_via_newtonschulz5, in float64 NumPy, on (filters, rest)."""
    x = g / (np.linalg.norm(g) + 1e-7)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    for _ in range(steps):
        a = x @ x.T
        x = 3.4445 * x + (-4.7750 * a + 2.0315 * a @ a) @ x
    return x.T if tall else x


def test_orthogonalize_flattens_the_singular_values_and_keeps_the_directions():
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(36, 8)) @ np.diag(np.geomspace(1, 10, 8))  # condition ~10
    result = to_numpy(optimizers.orthogonalize(keras.ops.convert_to_tensor(matrix, "float32")))
    # In the input's singular bases the result is diagonal: same directions, new values.
    u, _, vt = np.linalg.svd(matrix, full_matrices=False)
    in_input_bases = u.T @ result @ vt.T
    new_values = np.diag(in_input_bases)
    np.testing.assert_allclose(in_input_bases, np.diag(new_values), atol=2e-3)
    assert new_values.min() > 0.3 and new_values.max() < 1.6, new_values


def test_muon_step_on_conv_kernels_matches_airbench94_muon():
    """Kernels in muon_variable_paths: w <- w * sqrt(filters)/|w| - lr * scale * NS(g + m*buf),
    no decay, their own momentum; the other variables keep the SGD step."""
    rng = np.random.default_rng(4)
    initial = {"kernel": rng.normal(size=(3, 3, 2, 5)).astype("float32"),
               "beta": rng.normal(size=(5,)).astype("float32")}
    steps = [[rng.normal(size=v.shape).astype("float32") for v in initial.values()]
             for _ in range(3)]
    optimizer = optimizers.LookaheadNesterovSGD(
        learning_rate=0.1, momentum=0.85, weight_decay=0.01, muon_variable_paths=["kernel"],
        muon_learning_rate_scale=2.0, muon_momentum=0.6)
    kernel, beta = run_optimizer(optimizer, initial, steps)
    # torch's layout: (filters, inputs * 3 * 3); the orthogonalization ignores column order.
    w, buf = initial["kernel"].astype(np.float64), np.zeros((3, 3, 2, 5))
    for g, _ in steps:
        buf = 0.6 * buf + g
        w = w * np.sqrt(5) / np.linalg.norm(w)
        direction = np.moveaxis(g + 0.6 * buf, -1, 0).reshape(5, -1)
        update = np.moveaxis(newton_schulz_by_hand(direction).reshape(5, 3, 3, 2), 0, -1)
        w = w - 0.1 * 2.0 * update
    np.testing.assert_allclose(kernel, w, rtol=1e-4, atol=1e-5)
    grads = list(zip(*steps))
    np.testing.assert_allclose(beta, reference_sgd(initial["beta"], grads[1], 0.1, 0.85, 0.01, 1.0),
                               rtol=1e-5, atol=1e-6)


def test_linear_decay_schedule_falls_from_the_peak_to_zero():
    config = TrainConfig(epochs=2, schedule="linear_decay", learning_rate=3.0)
    schedule = recipe.learning_rate_schedule(config, steps_per_epoch=5)
    values = [float(to_numpy(schedule(step))) for step in (0, 1, 10)]
    assert values == pytest.approx([3.0, 3.0, 0.0])
    assert float(to_numpy(schedule(5.5))) == pytest.approx(1.5)


def test_triangular_schedule_rises_then_falls_linearly():
    schedule = optimizers.TriangularSchedule(2.0, total_steps=100, warmup_steps=23)
    values = [float(to_numpy(schedule(step))) for step in (0, 23, 100, 11.5, 61.5)]
    assert values[:3] == pytest.approx([0.4, 2.0, 0.14])
    assert values[3] == pytest.approx(2.0 * (0.2 + 0.8 * 0.5))
    assert values[4] == pytest.approx(2.0 * (1 - 0.93 * 0.5))


def test_optimizer_and_schedule_survive_get_config():
    schedule = optimizers.TriangularSchedule(1.5, total_steps=430, warmup_steps=98)
    optimizer = optimizers.LookaheadNesterovSGD(
        learning_rate=schedule, momentum=0.85, weight_decay=0.001, scaled_variable_names=["beta"],
        scaled_learning_rate=64.0, frozen_after_steps={"whiten/bias": 129}, lookahead_every=5,
        total_steps=430, fading_after_steps={"other/bias": 12})
    clone = optimizers.LookaheadNesterovSGD.from_config(optimizer.get_config())
    assert clone.get_config() == optimizer.get_config()
    assert clone.frozen_after_steps == {"whiten/bias": 129} and clone.lookahead_every == 5
    assert clone.fading_after_steps == {"other/bias": 12}


# ------------------------------------------------------------------ data and TTA

def test_alternating_flip_mirrors_each_image_in_every_other_epoch():
    # Image i: channel 0 rises from left to right (its orientation), channel 1 holds i.
    count = 64
    ramp = np.broadcast_to(np.arange(32, dtype=np.float32)[None, None, :] * 8, (count, 32, 32))
    ids = np.broadcast_to(np.arange(count, dtype=np.float32)[:, None, None], (count, 32, 32))
    images = np.stack([ramp, ids, np.zeros_like(ramp)], axis=-1).astype(np.uint8)
    batches = stream.training_stream(
        images, np.zeros(count, np.int64), image_size=(32, 32), batch_size=count, steps=1,
        augmentation="translate_alternating_flip", seed=3, epochs=3)
    mirrored = []
    for batch, _ in batches:
        batch = batch.numpy()
        order = batch[:, 0, 0, 1].astype(int)
        flipped = batch[:, 16, 0, 0] > batch[:, 16, 31, 0]  # bright on the left
        mirrored.append(flipped[np.argsort(order)])
    assert np.all(mirrored[0] != mirrored[1]) and np.all(mirrored[0] == mirrored[2])
    assert 0.25 < mirrored[0].mean() < 0.75  # each image's parity is random


def test_shifted_moves_images_by_one_pixel_with_reflected_edges():
    images = np.arange(2 * 4 * 4 * 1, dtype=np.float32).reshape(2, 4, 4, 1)
    down_right, up_left = tta.shifted(images, 0), tta.shifted(images, 2)
    np.testing.assert_array_equal(down_right[:, 1:, 1:], images[:, :-1, :-1])
    np.testing.assert_array_equal(up_left[:, :-1, :-1], images[:, 1:, 1:])
    np.testing.assert_array_equal(down_right[:, 0, 1:], images[:, 1, :-1])  # reflected row


def test_flip_translate_tta_weights_its_six_views(cifar_batch):
    model = build_cnn(widths=(8, 8, 8))
    images, labels = cifar_batch[0][:16].astype(np.uint8), cifar_batch[1][:16]
    flip = tta.tta_probabilities(model, images, 8, "flip")
    both = tta.tta_probabilities(model, images, 8, "flip_translate")
    moved = [tta.flip_averaged_probabilities(model, tta.shifted(images, o), 8)
             for o in (0, 2)]
    np.testing.assert_allclose(both, 0.5 * flip + 0.25 * moved[0] + 0.25 * moved[1], atol=1e-6)
    np.testing.assert_allclose(both.sum(axis=1), 1.0, atol=1e-6)
    result = tta.tta_evaluation(model, images, labels, 8, method="flip_translate")
    assert "6 views" in result["method"]


# ------------------------------------------------------------------ precision

@pytest.mark.parametrize("flags, devices, backend, enabled", [
    ({"avx512_bf16"}, ["cpu:0"], "tensorflow", True),
    ({"avx512_bf16"}, ["cpu:0"], "torch", True),
    ({"avx512_bf16"}, ["cpu:0"], "jax", False),
    ({"avx2"}, ["cpu:0"], "torch", False),
    ({"avx2"}, ["gpu:0", "cpu:0"], "jax", True),
])
def test_auto_precision_follows_the_machine(monkeypatch, flags, devices, backend, enabled):
    monkeypatch.setattr(environment, "cpu_flags", lambda: flags)
    monkeypatch.setattr(environment, "list_devices", lambda: devices)
    chosen, reason = precision.resolve_precision("auto", backend)
    assert chosen is enabled and reason.startswith("auto: ")
    assert precision.resolve_precision("off", backend) == (False, "--mixed-precision off")


# ------------------------------------------------------------------ the recipe learns

@pytest.mark.parametrize("config_file", ["configs/cnn.toml", "configs/cnn_airbench94.toml"])
def test_recipe_learns_on_held_out_real_images(backend, config_file):
    """The recipe, scaled to 2,000 training images (batch 100, 6 epochs, a
    narrow network), reaches well above chance on 1,000 images it never trained on."""
    from kerasvit.data import cifar

    splits = cifar.load_splits(validation_size=1000, subset_per_class=200)
    config = load_config_file(config_file)
    config.epochs, config.batch_size, config.mixed_precision = 6, 100, "off"
    config.model_args = {"widths": [16, 32, 64]}
    keras.utils.set_random_seed(0)
    model = build_cnn(**config.model_args)
    history, _ = loop.fit(model, config, splits, backend)
    val_accuracy = history.history["val_accuracy"]
    assert val_accuracy[-1] > 0.4, val_accuracy  # chance is 0.1
    assert val_accuracy[-1] > val_accuracy[0]
