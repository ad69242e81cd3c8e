import pytest
import torch

from lorakit.models import precision


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


@pytest.mark.parametrize("asked", ["bfloat16", "float16"])
def test_training_holds_half_frozen_projections_and_computes_in_float32(cpu_without_bf16, asked):
    dtype, upcast, note = precision.training_weights(asked, "cpu")
    assert (dtype, upcast) == (asked, True)
    assert note.startswith(f"model.dtype: {asked}: this CPU has no native bf16") and "runs in float32" in note
    # without the fused projections (which upcast per call) the whole model is loaded in float32
    assert precision.training_weights(asked, "cpu", fused=False)[:2] == ("float32", False)


def test_training_weights_elsewhere_are_weight_dtype_s(cpu_with_bf16):
    assert precision.training_weights("bfloat16", "cpu") == ("bfloat16", False, None)
    assert precision.training_weights("auto", "cpu") == ("float32", False, None)


def test_training_weights_with_precision_bf16_compute_in_bf16(cpu_without_bf16):
    assert precision.training_weights("bfloat16", "cpu", precision="bf16") == ("bfloat16", False, None)
