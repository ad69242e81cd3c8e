"""Attention for packed rows that costs what the samples cost, not what the row costs.

A packed row holds several samples back to back, position ids restarting at 0 for each. Given only
position ids, transformers builds a block-diagonal causal mask over the whole row and SDPA computes
every query against every key of the row: for 4 samples of 100 tokens that is a 400 x 400 score
matrix, four times the 4 x 100 x 100 the samples need, plus the mask itself. On a CPU each sample
gets its own causal SDPA call on a slice of the row (no mask, and grouped-query heads stay
un-repeated). On a GPU, where every kernel launch costs more than these small products, the row
runs as one masked SDPA call whose mask is built once per forward and shared by all layers.
It also serves rows whose samples share a prefix stored once (batching.pack with share_prefix).

The row's segments come from batching.pack as Python ints (`sample_segments`), so no layer has to
read position ids back from the device: on a GPU that read would stall the launch queue 2x per layer.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

NAME = "lorakit_packed"
# "auto": per-sample calls on CPU, one masked call elsewhere; "loop" or "mask" force one (benchmarks)
MODE_ENV = "LORAKIT_PACKED_ATTENTION"
_mask_cache: dict = {}


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
    length = query.shape[2]
    segments = kwargs.get("sample_segments") or _segments(kwargs.get("position_ids"), length, n_shared)
    dropout = dropout if module.training else 0.0
    groups = getattr(module, "num_key_value_groups", 1)
    if len(segments) > 1 and _one_call(query.device):
        mask = _row_mask(tuple(segments), n_shared, length, query.device)
        if groups > 1:  # repeated explicitly: not every masked SDPA kernel takes grouped-query heads
            key, value = _repeat_kv(key, groups), _repeat_kv(value, groups)
        attn = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling, dropout_p=dropout)
        return attn.transpose(1, 2).contiguous(), None
    out = []
    for a, b in segments:
        q, k, v, mask = query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None
        if n_shared and a >= n_shared:
            k = torch.cat([key[:, :, :n_shared], k], dim=2)
            v = torch.cat([value[:, :, :n_shared], v], dim=2)
            # query j sees the whole prefix and its own sample's tokens up to j
            mask = torch.ones(b - a, n_shared + b - a, dtype=torch.bool, device=query.device).tril(n_shared)
        out.append(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, scale=scaling,
                                                  dropout_p=dropout, enable_gqa=groups > 1))
    attn = out[0] if len(out) == 1 else torch.cat(out, dim=2)
    return attn.transpose(1, 2).contiguous(), None


def _one_call(device: torch.device) -> bool:
    mode = os.environ.get(MODE_ENV, "auto")
    return mode == "mask" or (mode == "auto" and device.type != "cpu")


def _segments(position_ids, length: int, n_shared: int = 0) -> list[tuple[int, int]]:
    """(start, end) of each sample in the row, read off the position ids (rows not from batching.pack)."""
    if position_ids is None:
        return [(0, length)]
    starts = (position_ids[0] == n_shared).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0] + starts
    return list(zip(starts, starts[1:] + [length]))


def row_mask(segments, n_shared: int, length: int, device="cpu") -> torch.Tensor:
    """(1, 1, length, length) bool, True where query i may attend key j: causal, within i's own segment,
    and, for a sample after a shared prefix of n_shared tokens, to the whole prefix."""
    owner = torch.empty(length, dtype=torch.long)
    for i, (a, b) in enumerate(segments):
        owner[a:b] = i
    if n_shared:
        owner[:n_shared] = -1  # the prefix is everyone's
    owner = owner.to(device)
    pos = torch.arange(length, device=device)
    mask = (owner[:, None] == owner[None, :]) | (owner[None, :] == -1)
    mask &= pos[None, :] <= pos[:, None]
    # rows padded to a multiple of 16 elements: the memory-efficient CUDA kernel wants an aligned stride
    wide = torch.zeros(length, -(-length // 16) * 16, dtype=torch.bool, device=device)
    wide[:, :length] = mask
    return wide[None, None, :, :length]


def _row_mask(segments: tuple, n_shared: int, length: int, device) -> torch.Tensor:
    # one forward calls this once per layer with the same row: build the mask once (and again only
    # when gradient checkpointing recomputes the forward of the same row)
    key = (segments, n_shared, length, str(device))
    if key not in _mask_cache:
        _mask_cache.clear()
        _mask_cache[key] = row_mask(segments, n_shared, length, device)
    return _mask_cache[key]


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, h, n, d = x.shape
    return x[:, :, None].expand(b, h, groups, n, d).reshape(b, h * groups, n, d)


def use_packed_attention(model) -> None:
    """Switch a loaded transformers model to per-sample attention over packed rows (training only: it
    assumes rows come from batching.pack, with no padding mask and no KV cache)."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, packed_attention)
    model.set_attn_implementation(NAME)
