import pytest
import torch

from lorakit import precision


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)


@pytest.fixture
def cpu_with_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)


def test_auto_is_float32_on_cpu(cpu_with_bf16):
    assert precision.weight_dtype("auto", "cpu") == ("float32", None)


@pytest.mark.parametrize("asked", ["bfloat16", "float16"])
def test_half_weights_become_float32_on_a_cpu_without_native_bf16(cpu_without_bf16, asked):
    dtype, note = precision.weight_dtype(asked, "cpu")
    assert dtype == "float32"
    assert note.startswith(f"model.dtype: {asked} -> float32") and "train.precision=bf16" in note


def test_precision_bf16_keeps_half_weights(cpu_without_bf16):
    assert precision.weight_dtype("bfloat16", "cpu", precision="bf16") == ("bfloat16", None)


def test_half_weights_stay_on_a_cpu_with_native_bf16(cpu_with_bf16):
    assert precision.weight_dtype("bfloat16", "cpu") == ("bfloat16", None)


def test_float32_is_never_changed(cpu_without_bf16):
    assert precision.weight_dtype("float32", "cpu") == ("float32", None)


def test_autocast_follows_the_hardware_on_auto(cpu_without_bf16):
    assert not precision.autocast("auto", "cpu")._enabled
    assert precision.autocast("bf16", "cpu")._enabled
    with precision.autocast("bf16", "cpu"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
