"""Measured matmul peak of this machine: GFLOP/s of large square torch matmuls in fp32 and bf16.

Used by train_speed.py as the denominator of model FLOP utilisation (MFU). A matmul of n x n by n x n
is 2 n^3 FLOPs; we take the best of a few timed repeats after a warm-up, with the given torch thread
count (CPU) or on the current GPU.

    .venv/bin/python benchmarks/matmul_peak.py --threads 2 [--device cpu|cuda] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time


def measure(
    dtype_name: str,
    device: str = "cpu",
    threads: int | None = None,
    n: int | None = None,
    min_seconds: float = 0.5,
    repeats: int = 3,
) -> float:
    """Best GFLOP/s of `repeats` timed batches of n x n matmuls (each batch runs >= min_seconds)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    dtype = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}[
        dtype_name
    ]
    n = n or (8192 if device.startswith("cuda") else _cpu_size(dtype))
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    a @ b  # warm-up (kernel selection, page faults)
    sync()
    t0 = time.perf_counter()
    a @ b
    sync()
    one = max(time.perf_counter() - t0, 1e-6)
    iters = max(1, int(min_seconds / one))
    best = 0.0
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            a @ b
        sync()
        best = max(best, 2 * n**3 * iters / (time.perf_counter() - t0) / 1e9)
    return best


def _cpu_size(dtype) -> int:
    """2048, or smaller where this dtype is emulated (bf16 without AVX512-BF16 ran at 0.3 GFLOP/s, so a
    2048^3 product took a minute): sized from a 256^3 probe so one product takes about half a second."""
    import torch

    a = torch.ones(256, 256, dtype=dtype)
    a @ a
    t0 = time.perf_counter()
    a @ a
    rate = 2 * 256**3 / max(time.perf_counter() - t0, 1e-6)
    n = int((0.5 * rate / 2) ** (1 / 3))
    return max(256, min(2048, n // 256 * 256))


def peaks(device: str = "cpu", threads: int | None = None) -> dict:
    return {
        "device": device,
        "threads": threads,
        "fp32_gflops": round(measure("float32", device, threads), 1),
        "bf16_gflops": round(measure("bfloat16", device, threads), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="fp32 and bf16 matmul GFLOP/s")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true", help="print one JSON line only")
    args = ap.parse_args()
    result = peaks(args.device, args.threads)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.device} ({args.threads} threads): fp32 {result['fp32_gflops']} GFLOP/s, "
            f"bf16 {result['bf16_gflops']} GFLOP/s"
        )


if __name__ == "__main__":
    main()
