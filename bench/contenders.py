"""Who races: the contenders of each benchmark, as plain dicts (no framework imports).

kind:
  keras    kerasvit's own model builder + kerasvit.training.recipe.compile_model, timed through
           model.fit (the same train function `python -m kerasvit.train` runs).
  native   plain PyTorch (bench/native_models.py) or Hugging Face transformers (vit_b16).
  preview  a kerasvit model with one change that kerasvit does not have yet, built here to
           measure a suggested speed-up; never counted as "best keras".
  pipeline kerasvit.data.stream.training_stream on CIFAR-10 with augmentation (images/s, no model).

group: contenders of one group share one worker process (one backend per process, since
Keras fixes it at import). Every torch.compile contender and the previews get processes of
their own: dynamo's caches are per process (two compiled models in one process share the
recompile limit of Keras' layer code), and a crash cannot touch the plain contenders.
"""

import fnmatch


def contender(name, kind, backend, group, precision="fp32", jit=None, compile=False,
              channels_last=None, default=True, **extra):
    return {"name": name, "kind": kind, "backend": backend, "group": group,
            "precision": precision, "jit": jit, "compile": compile,
            "channels_last": channels_last, "default": default, **extra}


def keras_contenders(model):
    """Every Keras backend in fp32 and mixed bf16; TF with XLA on and off; torch eager and
    torch.compile (Keras' jit_compile=True on torch). JAX always jits."""
    out = []
    big = model == "vit_b16"
    for precision in ("fp32", "bf16"):
        out.append(contender(f"keras-tensorflow-{precision}", "keras", "tensorflow", "keras-tensorflow",
                             precision, jit=False))
        out.append(contender(f"keras-tensorflow-{precision}-xla", "keras", "tensorflow",
                             "keras-tensorflow", precision, jit=True, default=not big))
        out.append(contender(f"keras-jax-{precision}", "keras", "jax", "keras-jax", precision, jit=True))
        out.append(contender(f"keras-torch-{precision}", "keras", "torch", "keras-torch", precision,
                             jit=False))
        out.append(contender(f"keras-torch-{precision}-compile", "keras", "torch",
                             f"keras-torch-compile-{precision}", precision, jit=True, compile=True,
                             default=not big))
    if model == "cnn":
        # The layout each backend does not pick (kerasvit.backend_ops.fastest_data_format):
        # torch in channels_last, as kerasvit trained it before; JAX in channels_first.
        for precision in ("fp32", "bf16"):
            out.append(contender(f"keras-torch-{precision}-channels-last", "keras", "torch",
                                 "keras-torch", precision, jit=False, default=False,
                                 data_format="channels_last"))
        out.append(contender("keras-jax-fp32-channels-first", "keras", "jax", "keras-jax", "fp32",
                             jit=True, default=False, data_format="channels_first"))
    return out


def native_contenders(model):
    if model == "vit_b16":
        # The bar: the Hugging Face eager step at the same batch.
        return [
            contender("hf-fp32", "native", "torch", "native", "fp32", framework="transformers"),
            contender("hf-bf16", "native", "torch", "native", "bf16", framework="transformers"),
            contender("hf-bf16-compile", "native", "torch", "native-compile-bf16", "bf16",
                      compile=True, framework="transformers", default=False),
        ]
    out = []
    if model == "cnn":
        for precision in ("fp32", "bf16"):
            out.append(contender(f"native-{precision}", "native", "torch", "native", precision,
                                 channels_last=False))
            out.append(contender(f"native-{precision}-cl", "native", "torch", "native", precision,
                                 channels_last=True))
            out.append(contender(f"native-{precision}-cl-compile", "native", "torch",
                                 f"native-compile-{precision}", precision, compile=True,
                                 channels_last=True))
    else:  # vit: channels_last touches only the patch conv
        for precision in ("fp32", "bf16"):
            out.append(contender(f"native-{precision}", "native", "torch", "native", precision,
                                 channels_last=False))
            out.append(contender(f"native-{precision}-compile", "native", "torch",
                                 f"native-compile-{precision}", precision, compile=True,
                                 channels_last=False))
        # Keras' attention path in kerasvit (explicit softmax, no fused kernel), natively.
        out.append(contender("native-fp32-explicit-attention", "native", "torch", "native", "fp32",
                             channels_last=False, fused_attention=False))
    for c in out:
        c["framework"] = "pytorch"
        c.setdefault("fused_attention", True)
    return out


def preview_contenders(model):
    """kerasvit with one suggested change, to measure it before anyone applies it."""
    out = []
    if model == "vit":
        # kerasvit's TransformerBlock always asks MultiHeadAttention for the scores, which
        # rules out ops.dot_product_attention (torch SDPA, jax/XLA fused attention).
        for backend, precision in (("torch", "fp32"), ("torch", "bf16"), ("jax", "fp32"),
                                   ("tensorflow", "fp32")):
            out.append(contender(f"preview-keras-{backend}-{precision}-fused-attention", "preview",
                                 backend, f"preview-{backend}", precision,
                                 jit=backend == "jax", change="fused_attention"))
    return out


def pipeline_contender():
    return contender("pipeline", "pipeline", "tensorflow", "pipeline", precision=None)


def all_contenders(model):
    return [*keras_contenders(model), *native_contenders(model), *preview_contenders(model)]


def select(model, patterns=None, skip=None):
    """The contenders to run: the defaults, or those whose names match any of `patterns`
    (comma-separated fnmatch patterns; "all" = every contender), minus `skip` patterns.
    The pipeline measurement is added by the caller unless disabled."""
    candidates = all_contenders(model)
    if patterns:
        wanted = [p.strip() for p in patterns.split(",") if p.strip()]
        if "all" in wanted:
            chosen = candidates
        else:
            chosen = [c for c in candidates if any(fnmatch.fnmatch(c["name"], p) for p in wanted)]
            unmatched = [p for p in wanted
                         if not any(fnmatch.fnmatch(c["name"], p) for c in candidates)]
            if unmatched:
                raise ValueError(f"no contender matches {', '.join(unmatched)}; "
                                 f"see --list")
    else:
        chosen = [c for c in candidates if c["default"]]
    if skip:
        drop = [p.strip() for p in skip.split(",") if p.strip()]
        chosen = [c for c in chosen if not any(fnmatch.fnmatch(c["name"], p) for p in drop)]
    return chosen
