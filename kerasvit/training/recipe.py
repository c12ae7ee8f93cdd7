"""What a config says about optimisation: optimizer, learning-rate schedule, loss,
metrics and XLA, put together by `compile_model`."""

import math

import keras

from kerasvit.training import optimizers

# Norms, biases and embeddings are not decayed (standard for AdamW on ViTs and CNNs).
NO_DECAY_NAMES = ["bias", "gamma", "beta", "class_token", "positions", "position_embedding",
                  "token_embedding"]


# --jit-compile auto: (backend, device kind) -> (jit_compile, why). One table, so that a
# bench result changes one line. CPU rows: what kerasvit always did there. GPU rows: not
# measured yet (bench/gpu_check.py on an H200, issue 21), so they keep the CPU choice; the
# open question is torch, where jit_compile=True is torch.compile of the train step.
JIT_TABLE = {
    ("jax", "cpu"): (True, "JAX runs every step through XLA"),
    ("jax", "gpu"): (True, "JAX runs every step through XLA"),
    ("tensorflow", "cpu"): (False, "on the CPU, TF's XLA was slower for convolutions "
                                   "(141 vs 212 images/s, bench/)"),
    ("tensorflow", "gpu"): (False, "not yet measured on a GPU: as on the CPU"),
    ("torch", "cpu"): (False, "on the CPU, torch.compile cost 20-50 s at the first step "
                              "for little gain (bench/)"),
    ("torch", "gpu"): (False, "not yet measured on a GPU (bench/gpu_check.py decides "
                              "whether torch.compile pays): as on the CPU"),
}


def choose_jit_compile(backend, device_kind):
    """(jit_compile value, why) that --jit-compile auto picks for this backend on a
    "cpu" or "gpu" (any accelerator counts as a GPU)."""
    kind = "cpu" if device_kind == "cpu" else "gpu"
    value, reason = JIT_TABLE[backend, kind]
    return value, f"auto: {backend} on the {kind.upper()}: {reason}"


def jit_compile_choice(setting, backend, device_kind=None):
    """{"setting", "value", "reason"} for the run folder (env.json), as `mixed_precision`
    is recorded; `device_kind` ("cpu", "gpu") is looked up when not given."""
    if setting in ("on", "off"):
        return {"setting": setting, "value": setting == "on", "reason": f"--jit-compile {setting}"}
    if device_kind is None:
        from kerasvit.runs import environment

        device_kind = environment.device_kind()
    value, reason = choose_jit_compile(backend, device_kind)
    return {"setting": setting, "value": value, "reason": reason}


def resolve_jit_compile(setting, backend, device_kind=None):
    """The jit_compile value for model.compile (see `jit_compile_choice`)."""
    return jit_compile_choice(setting, backend, device_kind)["value"]


def learning_rate_schedule(config, steps_per_epoch, peak=None):
    peak = config.learning_rate if peak is None else peak
    total = max(config.epochs * steps_per_epoch, 1)
    warmup = min(int(config.warmup_epochs * steps_per_epoch), total - 1)
    if config.schedule == "triangular":
        return optimizers.TriangularSchedule(peak, total_steps=total, warmup_steps=warmup)
    if config.schedule == "linear_decay":
        return optimizers.TriangularSchedule(peak, total_steps=total, warmup_steps=0,
                                             start_factor=1.0, end_factor=0.0)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(peak, decay_steps=total)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=total - warmup,
        warmup_target=peak,
        warmup_steps=warmup,
    )


def make_optimizer(model, config, steps_per_epoch):
    if config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(
            learning_rate=learning_rate_schedule(config, steps_per_epoch),
            weight_decay=config.weight_decay,
        )
        optimizer.exclude_from_weight_decay(var_names=NO_DECAY_NAMES)
        return optimizer
    from kerasvit.models.cnn_layers import PatchWhitening

    step_size, decay = optimizers.airbench_hyperparameters(
        config.learning_rate, config.weight_decay, config.momentum, config.batch_size)
    bias_steps = {layer.bias.path: math.ceil(config.whitening_bias_epochs * steps_per_epoch)
                  for layer in model.layers
                  if isinstance(layer, PatchWhitening) and config.whitening_bias_epochs}
    # airbench94 stops the whitening bias; airbench94_muon trains it with the BN offsets,
    # its rate falling to zero.
    fade = config.whitening_bias_schedule == "fade"
    return optimizers.LookaheadNesterovSGD(
        learning_rate=learning_rate_schedule(config, steps_per_epoch, peak=step_size),
        momentum=config.momentum,
        weight_decay=decay,
        # BatchNorm offsets ("beta"), and a fading whitening bias with them.
        scaled_variable_names=["beta", *(bias_steps if fade else ())],
        scaled_learning_rate=config.bias_lr_scale,
        frozen_after_steps={} if fade else bias_steps,
        fading_after_steps=bias_steps if fade else {},
        lookahead_every=config.lookahead_every,
        total_steps=max(config.epochs * steps_per_epoch, 1),
        muon_variable_paths=[v.path for v in model.trainable_variables
                             if config.muon_learning_rate and len(v.shape) == 4],
        muon_learning_rate_scale=config.muon_learning_rate / step_size,
        muon_momentum=config.muon_momentum,
    )


def compile_model(model, config, steps_per_epoch, backend):
    optimizer = make_optimizer(model, config, steps_per_epoch)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=config.label_smoothing
        ),
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.TopKCategoricalAccuracy(k=5, name="top5_accuracy"),
            keras.metrics.F1Score(average="macro", name="f1"),
        ],
        jit_compile=resolve_jit_compile(config.jit_compile, backend),
    )
    return model
