"""Which dtype the weights are held in and which one the matmuls run in, per device.

Half-precision matmuls are only fast on hardware made for them. On a CPU without AVX512-BF16 or AMX
they are emulated and many times slower than fp32 (figures: docs/benchmarks.md), so lorakit computes
in fp32 there unless told to insist. For training it still holds the frozen projection weights in the
half dtype asked for (half the memory; fused.py upcasts each one per call, at no measured cost) and
upcasts everything else once.
"""

from __future__ import annotations

from pathlib import Path

import torch

HALF = ("bfloat16", "float16")


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matmuls (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def weight_dtype(choice: str, device: str, precision: str = "auto") -> tuple[str, str | None]:
    """The dtype to load the weights in, and a one-line note when it differs from what was asked.

    auto: bfloat16 on a GPU that supports it, else float32. A half dtype asked for on a CPU without
    native bf16 becomes float32 (with a note), unless `train.precision: bf16` says to keep it anyway.
    """
    on_cuda = device.startswith("cuda")
    if choice == "auto":
        return ("bfloat16" if on_cuda and torch.cuda.is_bf16_supported() else "float32"), None
    if choice in HALF and not on_cuda and precision != "bf16" and not cpu_has_fast_bf16():
        return "float32", (
            f"model.dtype: {choice} -> float32: this CPU has no native bf16, where half-precision "
            f"matmuls run 7-60x slower (set train.precision=bf16 to keep {choice})"
        )
    return choice, None


def training_weights(
    choice: str, device: str, precision: str = "auto", fused: bool = True
) -> tuple[str, bool, str | None]:
    """For training: (dtype to load the weights in, whether to upcast all but the fused projections' frozen
    weights to float32 after loading (`upcast_except`), a one-line note when it differs from what was asked).

    Where weight_dtype would turn a half dtype into float32 (a CPU without native bf16), the fused
    projections can keep it for storage while computing in float32.
    """
    dtype, note = weight_dtype(choice, device, precision)
    if fused and choice in HALF and dtype == "float32":
        return (
            choice,
            True,
            (
                f"model.dtype: {choice}: this CPU has no native bf16 (half-precision matmuls run 7-60x "
                f"slower), so the frozen projections are held in {choice} and every matmul runs in "
                f"float32 (train.precision=bf16 computes in {choice})"
            ),
        )
    return dtype, False, note


def upcast_except(model, keep) -> int:
    """Cast every floating-point parameter and buffer of `model` to float32, except the tensors in `keep`;
    returns how many were cast."""
    keep_ids = {id(t) for t in keep}
    n = 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in keep_ids and t.is_floating_point() and t.dtype != torch.float32:
            t.data = t.data.float()
            n += 1
    return n


def autocast(precision: str, device: str):
    """bf16 autocast where the hardware is fast at it (auto), always (bf16) or never (fp32)."""
    kind = "cuda" if device.startswith("cuda") else "cpu"
    if precision == "auto":
        use_bf16 = torch.cuda.is_bf16_supported() if kind == "cuda" else cpu_has_fast_bf16()
    else:
        use_bf16 = precision == "bf16"
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=use_bf16)
