"""The CNN recipe's optimizer and schedule, in keras.ops so they run on every backend.

`LookaheadNesterovSGD` is Nesterov SGD as PyTorch (and airbench94) run it, with a
per-variable learning-rate scale, variables that stop training after a number of steps, and
lookahead: every `lookahead_every` steps the weights are pulled towards a slow copy, which
then replaces them. Its state (momentum, slow weights, step count) is optimizer state, so
it is saved in every backup and a resumed run continues exactly.

`airbench_hyperparameters` turns airbench's decoupled, per-1024-example hyperparameters into
the values this optimizer takes for a mean-reduced loss (Keras' convention).
"""

import keras
from keras import ops

PACKAGE = "kerasvit"


def airbench_hyperparameters(learning_rate, weight_decay, momentum, batch_size):
    """airbench expresses lr and weight decay per 1024 examples, decoupled from momentum
    and from each other; it sums the loss over the batch. For Keras' batch-mean loss:

    step size   eta = lr * batch / (1024 * (1 + 1 / (1 - momentum)))
    L2 factor   c   = weight_decay / lr      (gradient += c * w, before momentum)

    so that each step shrinks the weights by eta * c = weight_decay * batch / (1024 * ...),
    whatever lr is. Returns (eta, c)."""
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    return learning_rate * batch_size / kilostep_scale, weight_decay / learning_rate


def lookahead_decay(step, total_steps, base=0.95**5):
    """How much of the slow weights a lookahead sync at `step` (1-based) keeps: 0 at the
    start (the fast weights win), rising as (step / total)^3 to `base` at the end."""
    return base * (step / total_steps) ** 3


def orthogonalize(matrix, steps=3):
    """Muon's quintic Newton-Schulz iteration: `matrix` with its singular values pushed
    towards 1 (to roughly 0.5-1.5, which trains as well as exact U V^T and costs three small
    matrix products; Jordan et al. 2024). Works on the shorter side's Gram matrix."""
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = matrix.shape[0] > matrix.shape[1]
    x = ops.transpose(matrix) if tall else matrix
    x = x / (ops.norm(ops.reshape(x, (-1,))) + 1e-7)  # top singular value <= 1
    for _ in range(steps):
        gram = ops.matmul(x, ops.transpose(x))
        x = a * x + ops.matmul(b * gram + c * ops.matmul(gram, gram), x)
    return ops.transpose(x) if tall else x


@keras.saving.register_keras_serializable(package=PACKAGE)
class LookaheadNesterovSGD(keras.optimizers.Optimizer):
    """Per step, for each variable w with gradient g (torch.optim.SGD's update):

        d   = g + decay * w               decay = weight_decay / lr_scale(w)
        buf = momentum * buf + d
        w  -= lr * lr_scale(w) * (d + momentum * buf)       (nesterov)

    `lr_scale(w)` is `scaled_learning_rate` for variables whose name or path is in
    `scaled_variable_names` (airbench: BatchNorm offsets at 64x), else 1; dividing their decay
    by it keeps their per-step shrinkage the same. A variable whose path is in
    `frozen_after_steps` stops changing after that many steps. One whose path is in
    `fading_after_steps` leaves the schedule: its rate is the schedule's rate at step 0
    (times its lr_scale), falling linearly to zero at that many steps (airbench94_muon's
    whitening bias), so its decay fades with it. Every `lookahead_every` steps (and at
    `total_steps`):
        slow = a * slow + (1 - a) * w;  w = slow      a = lookahead_decay(step, total_steps)
    with `lookahead_every=0` there is no lookahead.

    Variables whose path is in `muon_variable_paths` (airbench94_muon: the conv kernels) take
    Muon's step instead, with no decay: their own Nesterov momentum `muon_momentum`, the
    weights rescaled to a norm of sqrt(filters) (the BatchNorm after each conv makes the
    scale irrelevant to the function, so this only fixes the effective step size), and the
    momentum direction orthogonalized before a step of lr * `muon_learning_rate_scale`.
    """

    def __init__(self, learning_rate=0.01, momentum=0.85, weight_decay=0.0,
                 scaled_variable_names=(), scaled_learning_rate=1.0, frozen_after_steps=None,
                 fading_after_steps=None, lookahead_every=0, total_steps=1,
                 muon_variable_paths=(),
                 muon_learning_rate_scale=1.0, muon_momentum=0.6,
                 name="lookahead_nesterov_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = momentum
        # Not the base class's weight_decay (decoupled, applied outside the momentum).
        self.coupled_weight_decay = weight_decay
        self.scaled_variable_names = list(scaled_variable_names)
        self.scaled_learning_rate = scaled_learning_rate
        self.frozen_after_steps = dict(frozen_after_steps or {})
        self.fading_after_steps = dict(fading_after_steps or {})
        self.lookahead_every = lookahead_every
        self.total_steps = total_steps
        self.muon_variable_paths = list(muon_variable_paths)
        self.muon_learning_rate_scale = muon_learning_rate_scale
        self.muon_momentum = muon_momentum
        # Where fading variables start: the schedule's rate at step 0, a constant. Read here,
        # eagerly: on TensorFlow `build` runs inside the traced train step, where it is symbolic.
        rate = self._learning_rate
        if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
            rate = rate(0)
        self.first_step_rate = float(ops.convert_to_numpy(rate))

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")
        self.slow_weights = (self.add_optimizer_variables(variables, "slow")
                             if self.lookahead_every else [])
        for slow, variable in zip(self.slow_weights, variables):
            # The slow copy starts as the weights before the first step (a copy: on JAX a
            # buffer shared with the weights would be donated twice).
            slow.assign(ops.copy(variable))
        scaled = set(self.scaled_variable_names)
        self.learning_rate_scales = [
            self.scaled_learning_rate if scaled & {v.name, v.path} else 1.0 for v in variables]
        self.train_steps = [self.frozen_after_steps.get(v.path) for v in variables]
        self.fading_steps = [self.fading_after_steps.get(v.path) for v in variables]
        self.takes_muon_steps = [v.path in self.muon_variable_paths for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        scale = self.learning_rate_scales[index]
        step = self.iterations  # 0-based: the count of steps already applied
        dtype = variable.dtype
        if self.fading_steps[index] is not None:
            remaining = 1 - ops.cast(step, "float32") / self.fading_steps[index]
            learning_rate = self.first_step_rate * ops.maximum(remaining, 0.0)
        learning_rate = ops.cast(learning_rate, dtype) * scale
        if self.train_steps[index] is not None:
            learning_rate = learning_rate * ops.cast(ops.less(step, self.train_steps[index]), dtype)
        gradient = ops.cast(gradient, dtype)
        momentum = self.momentums[index]
        if self.takes_muon_steps[index]:
            self.muon_step(gradient, variable, momentum, learning_rate)
        else:
            direction = gradient + (self.coupled_weight_decay / scale) * variable
            self.assign(momentum, self.momentum * momentum + direction)
            self.assign_sub(variable, learning_rate * (direction + self.momentum * momentum))
        if self.lookahead_every:
            self.lookahead(index, variable, step)

    def muon_step(self, gradient, variable, momentum, learning_rate):
        self.assign(momentum, self.muon_momentum * momentum + gradient)
        direction = gradient + self.muon_momentum * momentum
        filters = variable.shape[-1]
        normalized = variable * (filters ** 0.5 / (ops.norm(ops.reshape(variable, (-1,))) + 1e-12))
        step = orthogonalize(ops.reshape(direction, (-1, filters)))
        self.assign(variable, normalized - learning_rate * self.muon_learning_rate_scale
                    * ops.reshape(step, variable.shape))

    def lookahead(self, index, variable, step):
        slow = self.slow_weights[index]
        dtype = variable.dtype
        done = ops.cast(step + 1, "float32")
        total = float(self.total_steps)
        on_schedule = ops.equal((step + 1) % self.lookahead_every, 0)
        is_sync = ops.logical_or(on_schedule, ops.equal(step + 1, self.total_steps))
        # At the last step off the schedule, the weights just take the slow copy (decay 1).
        scheduled = ops.cast(on_schedule, "float32")
        decay = ops.cast(scheduled * lookahead_decay(done, total) + (1 - scheduled), dtype)
        synced = decay * slow + (1 - decay) * variable
        keep = ops.cast(is_sync, dtype)
        self.assign(slow, keep * synced + (1 - keep) * slow)
        self.assign(variable, keep * synced + (1 - keep) * variable)

    def get_config(self):
        config = super().get_config()
        config.update({
            "momentum": self.momentum,
            "weight_decay": self.coupled_weight_decay,
            "scaled_variable_names": self.scaled_variable_names,
            "scaled_learning_rate": self.scaled_learning_rate,
            "frozen_after_steps": self.frozen_after_steps,
            "fading_after_steps": self.fading_after_steps,
            "lookahead_every": self.lookahead_every,
            "total_steps": self.total_steps,
            "muon_variable_paths": self.muon_variable_paths,
            "muon_learning_rate_scale": self.muon_learning_rate_scale,
            "muon_momentum": self.muon_momentum,
        })
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class TriangularSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """airbench94's schedule: linear from `start_factor` x peak to the peak over
    `warmup_steps`, then linear down to `end_factor` x peak at `total_steps`."""

    def __init__(self, peak_learning_rate, total_steps, warmup_steps, start_factor=0.2,
                 end_factor=0.07):
        self.peak_learning_rate = peak_learning_rate
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.start_factor = start_factor
        self.end_factor = end_factor

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = max(self.warmup_steps, 1)
        rising = ops.minimum(step / warmup, 1.0)
        falling = ops.clip((step - warmup) / max(self.total_steps - warmup, 1), 0.0, 1.0)
        factor = ops.where(step < warmup,
                           self.start_factor + (1 - self.start_factor) * rising,
                           1 + (self.end_factor - 1) * falling)
        return self.peak_learning_rate * factor

    def get_config(self):
        return {"peak_learning_rate": self.peak_learning_rate, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "start_factor": self.start_factor,
                "end_factor": self.end_factor}
