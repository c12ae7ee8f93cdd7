"""Compute precision: bf16 where this machine runs it natively and the bench measured it
faster (`--mixed-precision auto`), with the reason recorded in the run folder."""

import sys

import keras

from kerasvit.runs import environment


def set_precision(setting, backend=None):
    """Sets the global dtype policy for `setting` ("auto", "on", "off"); returns
    {"setting", "enabled", "reason"} for the run folder."""
    # bf16 rather than fp16: it needs no loss scaling, and CPUs with AMX/AVX-512 BF16 and
    # recent GPUs both run it fast.
    enabled, reason = resolve_precision(setting, backend or keras.backend.backend())
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if enabled else "float32")
    if setting == "on" and bf16_is_emulated():
        print("warning: --mixed-precision on a CPU without bf16 instructions (no AVX-512 BF16 "
              "or AMX): bf16 is emulated here, about 10x slower than float32 on the cnn in "
              "bench/; leave --mixed-precision off on this machine", file=sys.stderr)
    return {"setting": setting, "enabled": enabled, "reason": reason}


# Where bench/throughput.py measured bf16 faster than float32 on a CPU with bf16
# instructions (2026-12-01, AMD EPYC with AVX-512 BF16, cnn): TensorFlow and torch. XLA on
# the CPU (JAX) gained nothing.
BF16_FASTER_ON_CPU = ("tensorflow", "torch")


def resolve_precision(setting, backend):
    """(bf16 on?, why) for a precision setting on this machine."""
    if setting in ("on", "off"):
        return setting == "on", f"--mixed-precision {setting}"
    if on_accelerator():
        return True, "auto: an accelerator runs bf16 natively"
    if environment.cpu_has_bf16_instructions() is not True:
        return False, "auto: this CPU has no bf16 instructions (bf16 would be emulated, ~10x slower)"
    if backend not in BF16_FASTER_ON_CPU:
        return False, f"auto: the CPU has bf16 instructions, but on {backend} the bench measured no gain"
    return True, f"auto: the CPU has bf16 instructions and the bench measured bf16 faster on {backend}"


def on_accelerator():
    """True when this backend sees a GPU or TPU."""
    devices = [d.lower() for d in environment.list_devices()]
    return any("gpu" in d or "cuda" in d or "tpu" in d for d in devices)


def bf16_is_emulated():
    """True when training runs on a CPU that lacks bf16 instructions."""
    return not on_accelerator() and environment.cpu_has_bf16_instructions() is False
