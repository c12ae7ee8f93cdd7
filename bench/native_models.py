"""Plain PyTorch re-implementations of kerasvit's `cnn` and `vit`, layer for layer, and the
Hugging Face ViT-B/16 used as the native baseline for `vit_b16`.

Same layers, widths, initial-value-independent shapes and parameter counts as
`kerasvit.models.cnn.build_cnn` and `kerasvit.models.vit.build_vit` (checked in
tests/benchmarks/test_bench.py and by bench/throughput.py at every run). Inputs are float images in
[0, 255], NCHW (any memory format), normalised inside the model as the Keras models do.
Also the native counterparts of kerasvit.training.recipe.make_optimizer (AdamW for `adamw`, Nesterov
SGD with airbench's parameter groups for `nesterov_sgd`) and of its schedules.

Nothing here imports keras or TensorFlow.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

# kerasvit.models.cnn.CIFAR_MEAN / CIFAR_VARIANCE (copied: importing kerasvit.models.cnn
# would import keras, which this module must not).
CIFAR_MEAN = (125.31, 122.95, 113.87)
CIFAR_STD = (62.99, 62.09, 66.70)

# kerasvit.models.cnn.build_cnn's defaults.
CNN_DEFAULTS = dict(image_shape=(32, 32, 3), num_classes=10, whitening_kernel_size=2,
                    widths=(64, 256, 256), batch_norm_momentum=0.6, logit_scale=1 / 9)
VIT_DEFAULTS = dict(image_shape=(32, 32, 3), patch_size=4, stem="conv", stem_widths=(64, 128),
                    num_layers=6, num_heads=4, hidden_dim=192,
                    mlp_dim=384, dropout_rate=0.0, attention_dropout=0.0, drop_path_rate=0.1,
                    layer_norm_epsilon=1e-6, num_classes=10)
# ViT-B/16 (keras-hub ViTBackbone arguments); the HF config is derived from these.
VIT_B16_ARCH = dict(image_shape=(224, 224, 3), patch_size=16, num_layers=12, num_heads=12,
                    hidden_dim=768, mlp_dim=3072)


def dropout_or_identity(rate):
    # Keras' Dropout(0.0) returns its input untouched; so does this.
    return nn.Dropout(rate) if rate > 0 else nn.Identity()


class Normalize(nn.Module):
    """keras.layers.Normalization(mean=CIFAR_MEAN, variance=CIFAR_VARIANCE): no weights."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("inv_std", 1.0 / torch.tensor(CIFAR_STD).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, x):
        return (x - self.mean) * self.inv_std


class BatchNorm(nn.BatchNorm2d):
    """keras.layers.BatchNormalization(scale=False, center=True): a learned offset (`bias`,
    Keras' `beta`) and no learned scale, so no `weight` parameter at all (airbench freezes
    a weight of ones instead, which would count as a non-trainable weight Keras lacks)."""

    def __init__(self, channels, eps, momentum):
        super().__init__(channels, eps=eps, momentum=momentum, affine=False)
        self.bias = nn.Parameter(torch.zeros(channels))  # F.batch_norm(weight=None, bias=...)


def partial_identity_conv(in_channels, filters):
    """kerasvit.models.cnn_layers.PartialIdentity: conv 3x3 (same, no bias), torch's default
    uniform init with the first min(in, out) output channels set to the identity."""
    conv = nn.Conv2d(in_channels, filters, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:min(in_channels, filters)])
    return conv


class ConvBlock(nn.Module):
    """kerasvit.models.cnn.conv_block: conv -> max-pool 2 -> BN -> GELU -> conv -> BN -> GELU."""

    def __init__(self, in_channels, filters, batch_norm_momentum):
        super().__init__()
        # Keras momentum m (weight of the old value) == torch momentum 1 - m; eps as Keras'.
        momentum = 1.0 - batch_norm_momentum
        self.conv_a = partial_identity_conv(in_channels, filters)
        self.pool = nn.MaxPool2d(2)
        self.bn_a = BatchNorm(filters, eps=1e-12, momentum=momentum)
        self.conv_b = partial_identity_conv(filters, filters)
        self.bn_b = BatchNorm(filters, eps=1e-12, momentum=momentum)
        self.act = nn.GELU()  # exact (erf) GELU, as keras.activations.gelu's default

    def forward(self, x):
        x = self.act(self.bn_a(self.pool(self.conv_a(x))))
        return self.act(self.bn_b(self.conv_b(x)))


class NativeCNN(nn.Module):
    """kerasvit's `cnn` (airbench94's network): normalise -> 2x2 patch whitening (fixed
    kernel, trained bias) -> GELU -> per width a ConvBlock -> global max-pool -> linear head
    (no bias) x logit_scale.

    The whitening kernel keeps torch's default random init (kerasvit's stays random until
    kerasvit.training.loop.fit adapts it to the training images; the benchmark never does)."""

    def __init__(self, image_shape=(32, 32, 3), num_classes=10, whitening_kernel_size=2,
                 widths=(64, 256, 256), batch_norm_momentum=0.6, logit_scale=1 / 9):
        super().__init__()
        channels = image_shape[2]
        whitening_filters = 2 * channels * whitening_kernel_size**2
        self.normalize = Normalize()
        self.whiten = nn.Conv2d(channels, whitening_filters, whitening_kernel_size)
        self.whiten.weight.requires_grad_(False)  # Keras: a non-trainable kernel
        self.act = nn.GELU()
        blocks, channels = [], whitening_filters
        for width in widths:
            blocks.append(ConvBlock(channels, width, batch_norm_momentum))
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, images):
        x = self.blocks(self.act(self.whiten(self.normalize(images))))
        features = torch.amax(x, dim=(2, 3))
        # The Keras head and rescaling are float32 even under mixed precision.
        with torch.autocast(features.device.type, enabled=False):
            return self.head(features.float()) * self.logit_scale


def drop_path(x, rate, training):
    """Stochastic depth, as kerasvit's TransformerBlock.drop_path (per-sample branch drop)."""
    if not training or rate == 0.0:
        return x
    keep = 1.0 - rate
    mask = torch.rand((x.shape[0], 1, 1), device=x.device) < keep
    return torch.where(mask, x / keep, torch.zeros_like(x))


class Attention(nn.Module):
    """keras.layers.MultiHeadAttention(num_heads, key_dim=dim // heads) on (x, x): the
    query/key/value projections (with biases) fused into one Linear, same parameter count.

    `fused=True` uses F.scaled_dot_product_attention (what a plain PyTorch ViT uses);
    False computes softmax(q k^T / sqrt(d)) v explicitly, as Keras does whenever the caller
    asks for the attention scores (kerasvit's TransformerBlock always does)."""

    def __init__(self, dim, num_heads, attention_dropout=0.0, fused=True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_dropout = attention_dropout
        self.fused = fused

    def forward(self, x):
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        dropout = self.attention_dropout if self.training else 0.0
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        else:
            scores = (q * (1.0 / math.sqrt(self.head_dim))) @ k.transpose(-2, -1)
            scores = F.dropout(scores.softmax(dim=-1), dropout, self.training)
            out = scores @ v
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Block(nn.Module):
    """kerasvit.models.vit_layers.TransformerBlock: pre-norm MHA and GELU MLP, stochastic depth."""

    def __init__(self, dim, num_heads, mlp_dim, dropout_rate, attention_dropout, drop_path_rate,
                 eps, fused_attention=True):
        super().__init__()
        self.norm_1 = nn.LayerNorm(dim, eps=eps)
        self.attention = Attention(dim, num_heads, attention_dropout, fused=fused_attention)
        self.norm_2 = nn.LayerNorm(dim, eps=eps)
        self.mlp_in = nn.Linear(dim, mlp_dim)
        self.act = nn.GELU()
        self.mlp_out = nn.Linear(mlp_dim, dim)
        self.dropout = dropout_or_identity(dropout_rate)
        self.drop_path_rate = drop_path_rate

    def forward(self, x):
        x = x + drop_path(self.dropout(self.attention(self.norm_1(x))), self.drop_path_rate,
                          self.training)
        hidden = self.mlp_out(self.dropout(self.act(self.mlp_in(self.norm_2(x)))))
        return x + drop_path(self.dropout(hidden), self.drop_path_rate, self.training)


class NativeConvStem(nn.Sequential):
    """kerasvit.models.vit_layers.ConvPatchEmbedding: 3x3 conv + BatchNorm + GELU per stem
    width, then a 3x3 conv to the width; the last log2(patch_size) convs have stride 2.
    Same shapes and parameter counts; torch pads stride-2 convs on both sides where Keras'
    "same" pads bottom/right only, which shifts the grid by a pixel (irrelevant to speed)."""

    def __init__(self, in_channels, patch_size, hidden_dim, stem_widths):
        widths = [*stem_widths, hidden_dim]
        first_strided = len(widths) - (patch_size.bit_length() - 1)
        layers, channels = [], in_channels
        for index, width in enumerate(widths):
            last = index == len(widths) - 1
            layers.append(nn.Conv2d(channels, width, 3, stride=2 if index >= first_strided else 1,
                                    padding=1, bias=last))
            if not last:  # Keras' BatchNormalization defaults: eps 1e-3, momentum 0.99
                layers += [nn.BatchNorm2d(width, eps=1e-3, momentum=0.01), nn.GELU()]
            channels = width
        super().__init__(*layers)


class NativeViT(nn.Module):
    """kerasvit's `vit`: normalise -> conv stem (or patch conv) -> [class token; patches] +
    positions -> pre-norm blocks -> LayerNorm -> class token -> linear head."""

    def __init__(self, image_shape=(32, 32, 3), patch_size=4, stem="conv", stem_widths=(64, 128),
                 num_layers=6, num_heads=4,
                 hidden_dim=192, mlp_dim=384, dropout_rate=0.0, attention_dropout=0.0,
                 drop_path_rate=0.1, layer_norm_epsilon=1e-6, num_classes=10,
                 fused_attention=True):
        super().__init__()
        height, width = image_shape[0], image_shape[1]
        num_patches = (height // patch_size) * (width // patch_size)
        self.normalize = Normalize()
        self.patch_embedding = (
            NativeConvStem(image_shape[2], patch_size, hidden_dim, stem_widths) if stem == "conv"
            else nn.Conv2d(image_shape[2], hidden_dim, patch_size, stride=patch_size))
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.positions = nn.Parameter(torch.zeros(1, num_patches + 1, hidden_dim))
        nn.init.trunc_normal_(self.class_token, std=0.02)
        nn.init.trunc_normal_(self.positions, std=0.02)
        self.embedding_dropout = dropout_or_identity(dropout_rate)
        self.blocks = nn.ModuleList([
            Block(hidden_dim, num_heads, mlp_dim, dropout_rate, attention_dropout,
                  drop_path_rate * index / max(num_layers - 1, 1), layer_norm_epsilon,
                  fused_attention)
            for index in range(num_layers)
        ])
        self.final_norm = nn.LayerNorm(hidden_dim, eps=layer_norm_epsilon)
        self.head = nn.Linear(hidden_dim, num_classes)

    def forward(self, images):
        x = self.patch_embedding(self.normalize(images))           # (B, D, H', W')
        x = x.flatten(2).transpose(1, 2)                            # (B, H'W', D), row-major
        token = self.class_token.expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([token, x], dim=1) + self.positions.to(x.dtype)
        x = self.embedding_dropout(x)
        for block in self.blocks:
            x = block(x)
        features = self.final_norm(x)[:, 0]
        with torch.autocast(features.device.type, enabled=False):
            return self.head(features.float())


def build_native(model_name, fused_attention=True, **model_args):
    """The PyTorch twin of `kerasvit.models.build_model(model_name, **model_args)`."""
    if model_name == "cnn":
        args = {**CNN_DEFAULTS, **model_args}
        return NativeCNN(**args)
    if model_name == "vit":
        args = {**VIT_DEFAULTS, **model_args}
        return NativeViT(fused_attention=fused_attention, **args)
    raise ValueError(f"no native twin for model {model_name!r} (cnn, vit; vit_b16 uses HF)")


def hf_vit_config(arch=None, num_classes=10):
    """transformers.ViTConfig equal to keras-hub's ViTBackbone(**arch) + a linear head."""
    from transformers import ViTConfig

    arch = {**VIT_B16_ARCH, **(arch or {})}
    height, width, channels = arch["image_shape"]
    if height != width:
        raise ValueError("the HF ViT baseline needs square images")
    return ViTConfig(
        image_size=height, patch_size=arch["patch_size"], num_channels=channels,
        hidden_size=arch["hidden_dim"], num_hidden_layers=arch["num_layers"],
        num_attention_heads=arch["num_heads"], intermediate_size=arch["mlp_dim"],
        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-6, qkv_bias=True, num_labels=num_classes,
    )


def build_hf_vit(arch=None, num_classes=10):
    """Hugging Face ViTForImageClassification, random init (no download)."""
    from transformers import ViTForImageClassification

    return ViTForImageClassification(hf_vit_config(arch, num_classes))


class HFLogits(nn.Module):
    """Wraps a ViTForImageClassification so that forward(pixel_values) returns logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).logits


def param_counts(module):
    """(trainable, non_trainable) like Keras counts them: parameters, and the BatchNorm
    running statistics (not `num_batches_tracked`, which Keras has no counterpart for)."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    stats = sum(b.numel() for name, b in module.named_buffers()
                if name.endswith(("running_mean", "running_var")))
    return int(trainable), int(frozen + stats)


# Same exclusions as kerasvit.training.recipe.NO_DECAY_NAMES: norms, biases and embeddings.
NO_DECAY_KEYS = ("class_token", "positions", "cls_token", "position_embeddings")


def adamw_param_groups(module, weight_decay):
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or any(key in name for key in NO_DECAY_KEYS):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_adamw(module, learning_rate, weight_decay):
    """AdamW with kerasvit's decay exclusions; the fused kernel where this torch has one
    (torch >= 2.4 on CPU), else foreach. Returns (optimizer, implementation name)."""
    groups = adamw_param_groups(module, weight_decay)
    # Keras AdamW defaults: beta_2 0.999, epsilon 1e-7.
    kwargs = dict(lr=learning_rate, betas=(0.9, 0.999), eps=1e-7)
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs), "fused"
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, foreach=True, **kwargs), "foreach"


def warmup_cosine_factor(warmup_steps, total_steps):
    """Linear warmup then cosine decay to 0, as kerasvit.training.recipe.learning_rate_schedule."""
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / max(warmup_steps, 1)
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def triangular_factor(warmup_steps, total_steps, start_factor=0.2, end_factor=0.07):
    """kerasvit.training.optimizers.TriangularSchedule / peak: linear from `start_factor` to 1 over
    the warmup, then linear down to `end_factor` at `total_steps` (airbench94)."""
    warmup = max(warmup_steps, 1)

    def factor(step):
        if step < warmup:
            return start_factor + (1 - start_factor) * min(step / warmup, 1.0)
        falling = min(max((step - warmup) / max(total_steps - warmup, 1), 0.0), 1.0)
        return 1 + (end_factor - 1) * falling

    return factor


def warmup_cosine(optimizer, warmup_steps, total_steps):
    """Linear warmup then cosine decay to 0, as kerasvit.training.recipe.learning_rate_schedule."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer,
                                             warmup_cosine_factor(warmup_steps, total_steps))


def airbench_hyperparameters(learning_rate, weight_decay, momentum, batch_size):
    """kerasvit.training.optimizers.airbench_hyperparameters (copied: that module imports keras;
    tests/benchmarks/test_bench.py checks they agree): airbench's per-1024-example lr and decoupled
    weight decay -> (step size eta, L2 factor c) for a batch-mean loss."""
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    return learning_rate * batch_size / kilostep_scale, weight_decay / learning_rate


def nesterov_sgd_param_groups(module, step_size, decay, bias_lr_scale, leave_out=()):
    """airbench94's groups, as kerasvit.training.recipe.make_optimizer sets up LookaheadNesterovSGD:
    BatchNorm offsets at `bias_lr_scale` x the step size with their decay divided by it (the
    same per-step shrinkage), everything else at the step size with decay `c`. The
    whitening bias (NativeCNN.whiten) gets a group of its own so that the schedule can stop
    it (`whitening_bias_epochs`); it has the plain step size and decay."""
    bn_biases = {id(m.bias) for m in module.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None}
    whiten = getattr(module, "whiten", None)
    whitening_bias = getattr(whiten, "bias", None)
    norm, whitening, other = [], [], []
    left_out = {id(param) for param in leave_out}
    for param in module.parameters():
        if not param.requires_grad or id(param) in left_out:
            continue
        if id(param) in bn_biases:
            norm.append(param)
        elif param is whitening_bias:
            whitening.append(param)
        else:
            other.append(param)
    groups = [{"params": other, "lr": step_size, "weight_decay": decay},
              {"params": norm, "lr": step_size * bias_lr_scale,
               "weight_decay": decay / bias_lr_scale}]
    if whitening:
        groups.append({"params": whitening, "lr": step_size, "weight_decay": decay,
                       "whitening_bias": True})
    return groups


def make_nesterov_sgd(module, config):
    """torch.optim.SGD(nesterov=True) with airbench's groups (fused kernel where available,
    else foreach). No lookahead (kerasvit's LookaheadNesterovSGD has it: one weighted
    average every `lookahead_every` steps). With `muon_learning_rate`, the conv kernels
    take Muon steps instead (NesterovSGDWithMuon). Returns (optimizer, implementation name)."""
    step_size, decay = airbench_hyperparameters(config["learning_rate"], config["weight_decay"],
                                                config["momentum"], config["batch_size"])
    muon = [p for p in module.parameters()
            if p.requires_grad and p.ndim == 4] if config.get("muon_learning_rate") else []
    groups = nesterov_sgd_param_groups(module, step_size, decay, config["bias_lr_scale"],
                                       leave_out=muon)
    kwargs = dict(lr=step_size, momentum=config["momentum"], nesterov=True)
    try:
        sgd, impl = torch.optim.SGD(groups, fused=True, **kwargs), "fused"
    except (RuntimeError, TypeError, ValueError):
        sgd, impl = torch.optim.SGD(groups, foreach=True, **kwargs), "foreach"
    if not muon:
        return sgd, impl
    return NesterovSGDWithMuon(sgd, muon, config["muon_learning_rate"],
                               config["muon_momentum"]), f"{impl} SGD + Muon"


def orthogonalize(matrix, steps=3):
    """kerasvit.training.optimizers.orthogonalize: Muon's quintic Newton-Schulz iteration."""
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = matrix.shape[0] > matrix.shape[1]
    x = matrix.T if tall else matrix
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class NesterovSGDWithMuon(torch.optim.Optimizer):
    """airbench94_muon's optimizer as kerasvit's LookaheadNesterovSGD runs it: `sgd` (Nesterov
    SGD) for everything but the conv kernels, which take Muon steps (momentum direction
    orthogonalized; each kernel renormalised to norm sqrt(filters) first). One optimizer
    for the bench's loop: its param_groups are SGD's plus the Muon group, so one LambdaLR
    schedules both."""

    def __init__(self, sgd, kernels, learning_rate, momentum):
        super().__init__(kernels, dict(lr=learning_rate, muon_momentum=momentum))
        self.sgd = sgd
        self.muon_groups = list(self.param_groups)
        self.param_groups = sgd.param_groups + self.muon_groups

    @torch.no_grad()
    def step(self):
        self.sgd.step()
        for group in self.muon_groups:
            for kernel in group["params"]:
                if kernel.grad is None:
                    continue
                buffer = self.state[kernel].setdefault("momentum", torch.zeros_like(kernel))
                buffer.mul_(group["muon_momentum"]).add_(kernel.grad)
                direction = kernel.grad + group["muon_momentum"] * buffer
                filters = kernel.shape[0]  # torch kernels are (out, in, h, w)
                kernel.mul_(filters ** 0.5 / (kernel.norm() + 1e-12))
                update = orthogonalize(direction.reshape(filters, -1).float())
                kernel.sub_(group["lr"] * update.reshape(kernel.shape).to(kernel.dtype))


def make_optimizer(module, config, steps_per_epoch):
    """The native counterpart of kerasvit.training.recipe.make_optimizer for `config` (a
    TrainConfig as a dict): "adamw" -> AdamW with kerasvit's decay exclusions, "nesterov_sgd"
    -> Nesterov SGD with airbench's groups (and Muon); the config's schedule ("warmup_cosine",
    "triangular" or "linear_decay") as a LambdaLR stepped once per training step. Returns (optimizer,
    scheduler, description)."""
    if config["optimizer"] == "adamw":
        optimizer, impl = make_adamw(module, config["learning_rate"], config["weight_decay"])
        description = f"torch.optim.AdamW ({impl})"
    elif config["optimizer"] == "nesterov_sgd":
        optimizer, impl = make_nesterov_sgd(module, config)
        description = f"torch.optim.SGD nesterov, airbench groups, no lookahead ({impl})"
        if config.get("muon_learning_rate"):
            description = (f"torch.optim.SGD nesterov + Muon on the conv kernels, airbench94_muon's "
                           f"groups ({impl})")
    else:
        raise ValueError(f"no native optimizer for {config['optimizer']!r}")
    total = max(int(config["epochs"] * steps_per_epoch), 1)
    if config["schedule"] == "triangular":
        warmup = min(int(config["warmup_epochs"] * steps_per_epoch), total - 1)
        factor = triangular_factor(warmup, total)
    elif config["schedule"] == "linear_decay":  # as recipe: triangular from 1x down to 0
        factor = triangular_factor(0, total, start_factor=1.0, end_factor=0.0)
    else:
        factor = warmup_cosine_factor(int(config["warmup_epochs"] * steps_per_epoch), total)
    bias_steps = (math.ceil(config["whitening_bias_epochs"] * steps_per_epoch)
                  if config.get("whitening_bias_epochs") else None)

    def group_factor(group):
        if bias_steps is None or not group.get("whitening_bias"):
            return factor
        return lambda step: factor(step) if step < bias_steps else 0.0  # frozen, as Keras

    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [group_factor(group) for group in optimizer.param_groups])
    return optimizer, scheduler, f"{description}, {config['schedule']} schedule"
