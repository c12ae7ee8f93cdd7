"""--mixed-precision on a CPU without bf16 instructions warns (bench/ measured bf16 ~10x
slower than float32 on such a CPU); with them, or off, it stays quiet."""

import keras
import pytest

from kerasvit.runs import environment
from kerasvit.training import precision


@pytest.mark.parametrize("flags, mixed_precision, warns", [
    ({"avx2", "fma"}, True, True),
    ({"avx2", "avx512f", "avx512_bf16"}, True, False),
    ({"avx2", "amx_bf16", "amx_tile"}, True, False),
    ({"avx2", "fma"}, False, False),
])
def test_bf16_on_a_cpu_without_bf16_instructions_warns(monkeypatch, capsys, flags,
                                                       mixed_precision, warns):
    monkeypatch.setattr(environment, "cpu_flags", lambda: flags)
    monkeypatch.setattr(environment, "list_devices", lambda: ["cpu:0"])
    try:
        precision.set_precision("on" if mixed_precision else "off")
        assert keras.mixed_precision.global_policy().name == (
            "mixed_bfloat16" if mixed_precision else "float32")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert ("bf16 is emulated here" in capsys.readouterr().err) == warns


def test_no_warning_on_a_gpu(monkeypatch, capsys):
    monkeypatch.setattr(environment, "cpu_flags", lambda: {"avx2"})
    monkeypatch.setattr(environment, "list_devices", lambda: ["gpu:0", "cpu:0"])
    try:
        precision.set_precision("on")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert "emulated" not in capsys.readouterr().err


def test_env_records_whether_the_cpu_has_bf16_instructions():
    assert environment.collect_env(keras.backend.backend())["cpu_bf16_instructions"] in (True, False, None)


def test_devices_name_where_keras_puts_tensors():
    """On torch, Keras lists no devices; the list must still follow the tensors (bench/
    gpu_check.py found "cpu:0" recorded for a run on a CUDA GPU before this)."""
    tensor_device = str(keras.ops.convert_to_tensor([0.0]).device).lower()
    on_gpu = "cuda" in tensor_device or "gpu" in tensor_device
    assert environment.list_devices()[0].startswith("gpu:" if on_gpu else "cpu:")
