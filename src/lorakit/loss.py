"""Causal-LM loss computed only where there are labels, in chunks.

The vocabulary of Qwen3 has 151,936 entries: full logits for a 2,048-token row are 1.2 GB in fp32
(twice that with their gradient). Running the LM head only on supervised positions, a chunk at a
time under activation checkpointing, keeps the peak to one chunk of logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lorakit.batching import IGNORE

CHUNK = 1024


def _chunk_loss(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    return F.cross_entropy(logits, targets, reduction="sum")


def summed_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Sum of token losses over supervised positions of `batch` (divide by the token count yourself)."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = causal_lm.get_decoder(), causal_lm.get_output_embeddings()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    hidden = decoder(**inputs, use_cache=False).last_hidden_state
    labels = batch["shift_labels"]
    keep = labels != IGNORE
    hidden, targets = hidden[keep], labels[keep]
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, targets.numel(), CHUNK):
        h, t = hidden[start:start + CHUNK], targets[start:start + CHUNK]
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss, head, h, t, use_reentrant=False)
        else:
            total = total + _chunk_loss(head, h, t)
    return total
