"""The LM head for a few rows on a CPU: the same product, ordered so that the BLAS uses both cores.

Decoding asks the head for the logits of one position per row: a handful of rows against the
vocabulary (49,152 x 576 for SmolLM2, 151,936 x 2,560 for Qwen3-4B). For 2 to 64 rows the CPU BLAS
computes `x @ W.T` on one thread at a fraction of memory speed, and `(W @ x.T).T` on all of them: for 8
rows of SmolLM2's head, 17.2 against 7.5 ms on 2 threads (docs/benchmarks.md, GRPO). The results agree to
float rounding (the order of the sums differs), which only the choice of near-tied tokens could see.
"""

from __future__ import annotations

import torch

ROWS = (2, 64)  # where the reordered product is the faster one (one row is a GEMV either way)


def install(causal_lm) -> None:
    """Route the model's output embedding through `_head` for no-grad CPU calls of a few rows; anything
    else (training, a GPU, a bias, many rows) keeps the module's own forward. Idempotent."""
    head = causal_lm.get_output_embeddings() if hasattr(causal_lm, "get_output_embeddings") else None
    if type(head) is not torch.nn.Linear or head.bias is not None or getattr(head, "_lorakit_cpu_head", False):
        return
    original = head.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1] if x.dim() >= 2 else 1
        if (
            torch.is_grad_enabled()
            or x.device.type != "cpu"
            or x.dtype != head.weight.dtype
            or not ROWS[0] <= rows <= ROWS[1]
        ):
            return original(x)
        flat = x.reshape(rows, x.shape[-1])
        return (head.weight @ flat.t()).t().contiguous().reshape(*x.shape[:-1], head.weight.shape[0])

    head.forward = forward
    head._lorakit_cpu_head = True
