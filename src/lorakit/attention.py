"""Attention for packed rows that costs what the samples cost, not what the row costs.

A packed row holds several samples back to back, position ids restarting at 0 for each. Given only
position ids, transformers builds a block-diagonal causal mask over the whole row and SDPA computes
every query against every key of the row: for 4 samples of 100 tokens that is a 400 x 400 score
matrix, four times the 4 x 100 x 100 the samples need, plus the mask itself. Here each sample gets
its own causal SDPA call on a slice of the row (no mask, and grouped-query heads stay un-repeated).
It also serves rows whose samples share a prefix stored once (batching.pack with share_prefix).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "lorakit_packed"


def packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers attention interface: query (batch, heads, seq, dim), key/value (batch, kv_heads, seq,
    dim); returns (batch, seq, heads, dim). In a one-row batch, samples start where the position id is
    0, or, after a shared prefix of `shared_prefix_len` tokens (batching.pack), where it is that length;
    each such sample attends to the prefix, then causally to itself."""
    # transformers builds no mask for an attention it does not know, so a padded batch (several rows)
    # would silently attend to its padding: refuse anything but one packed row
    if attention_mask is not None or query.shape[0] != 1:
        raise ValueError(f"{NAME} attention takes one packed row without an attention mask")
    n_shared = int(kwargs.get("shared_prefix_len") or 0)
    gqa = getattr(module, "num_key_value_groups", 1) > 1
    dropout = dropout if module.training else 0.0
    out = []
    for a, b in _segments(kwargs.get("position_ids"), query.shape[2], n_shared):
        q, k, v, mask = query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None
        if n_shared and a >= n_shared:
            k = torch.cat([key[:, :, :n_shared], k], dim=2)
            v = torch.cat([value[:, :, :n_shared], v], dim=2)
            # query j sees the whole prefix and its own sample's tokens up to j
            mask = torch.ones(b - a, n_shared + b - a, dtype=torch.bool, device=query.device).tril(n_shared)
        out.append(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, scale=scaling,
                                                  dropout_p=dropout, enable_gqa=gqa))
    attn = out[0] if len(out) == 1 else torch.cat(out, dim=2)
    return attn.transpose(1, 2).contiguous(), None


def _segments(position_ids, length: int, n_shared: int = 0) -> list[tuple[int, int]]:
    if position_ids is None:
        return [(0, length)]
    starts = (position_ids[0] == n_shared).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0] + starts
    return list(zip(starts, starts[1:] + [length]))


def use_packed_attention(model) -> None:
    """Switch a loaded transformers model to per-sample attention over packed rows (training only: it
    assumes rows come from batching.pack, with no padding mask and no KV cache)."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, packed_attention)
    model.set_attn_implementation(NAME)
