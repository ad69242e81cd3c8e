"""Attention for packed rows that costs what the samples cost, not what the row costs.

A packed row holds several samples back to back, position ids restarting at 0 for each. Given only
position ids, transformers builds a block-diagonal causal mask over the whole row and SDPA computes
every query against every key of the row: for 4 samples of 100 tokens that is a 400 x 400 score
matrix, four times the 4 x 100 x 100 the samples need, plus the mask itself. On a CPU each sample
gets its own causal SDPA call on a slice of the row (no mask, and grouped-query heads stay
un-repeated). On a GPU, where every kernel launch costs more than these small products, the row
runs as one masked SDPA call whose mask is built once per forward and shared by all layers
(`train.packed_attention` picks either on any device).
It also serves rows whose samples share a prefix stored once (batching.pack with share_prefix), and
rows of grouped samples (batching.pack_groups: a row-wide prefix, then each group's prompt once), where
each segment attends to the segments its `segment_contexts` entry names, then causally to itself.

What the model's own attention computes besides causal softmax attention arrives as keyword arguments
of the attention interface, per layer, and is computed here exactly as transformers' eager attention
does: `sliding_window` (query i sees key j when i - j < window, positions counted within the sample),
`softcap` (scores -> softcap * tanh(scores / softcap), Gemma2) and `s_aux` (one learned sink logit per
head that takes part in the softmax and attends to nothing, GPT-OSS). A window is a mask; softcap and
sinks need the scores themselves, so those layers run the product in eager form, sample by sample. Anything else a model
does to its attention is outside this function: lorakit.training.fastpaths sends such models to
transformers' own attention instead.

The row's segments come from batching.pack as Python ints (`sample_segments`), so no layer has to
read position ids back from the device: on a GPU that read would stall the launch queue 2x per layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "lorakit_packed"
# train.packed_attention: "per_sample" calls, one "whole_row" masked call, or "auto" (per_sample on CPU)
CALLS = ("auto", "per_sample", "whole_row")
# where use_packed_attention leaves that choice: on each module, since the attention function is handed
# its layer; no global, so two models in one process may differ
CALLS_ATTR = "_lorakit_packed_calls"
# what packed_attention computes beyond causal softmax attention (lorakit.training.fastpaths reads this)
SUPPORTS = frozenset({"sliding_window", "softcap", "sinks", "grouped_query"})
_mask_cache: dict = {}
_sample_cache: dict = {}  # small per-sample masks, by shape (_cached_sample_mask)


def packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers attention interface: query (batch, heads, seq, dim), key/value (batch, kv_heads, seq,
    dim); returns (batch, seq, heads, dim). In a one-row batch, samples start where the position id is
    0, or, after a shared prefix of `shared_prefix_len` tokens (batching.pack), where it is that length;
    each such sample attends to the prefix, then causally to itself (within `sliding_window`, if given)."""
    # transformers builds no mask for an attention it does not know, so a padded batch (several rows)
    # would silently attend to its padding: refuse anything but one packed row
    if attention_mask is not None or query.shape[0] != 1:
        raise ValueError(f"{NAME} attention takes one packed row without an attention mask")
    n_shared = int(kwargs.get("shared_prefix_len") or 0)
    length = query.shape[2]
    segments = kwargs.get("sample_segments") or _segments(kwargs.get("position_ids"), length, n_shared)
    contexts = kwargs.get("segment_contexts") or prefix_contexts(segments, n_shared)
    dropout = dropout if module.training else 0.0
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    window = kwargs.get("sliding_window") or 0
    softcap, sinks = kwargs.get("softcap") or 0.0, kwargs.get("s_aux")
    eager = bool(softcap) or sinks is not None
    groups = getattr(module, "num_key_value_groups", 1)
    # eager layers always go sample by sample: their explicit scores over a whole row (16k tokens on a
    # GPU) would cost heads x row^2 floats, where the samples' own cost the sum of their squares
    if len(segments) > 1 and _one_call(module, query.device) and not eager:
        mask = _row_mask(tuple(segments), tuple(contexts), length, query.device, window)
        if groups > 1:  # repeated explicitly: not every masked SDPA kernel takes grouped-query heads
            key, value = _repeat_kv(key, groups), _repeat_kv(value, groups)
        attn = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale, dropout_p=dropout)
        return attn.transpose(1, 2).contiguous(), None
    out = []
    queries, keys, values = (_pieces(t, segments) for t in (query, key, value))
    for i, ((a, b), context) in enumerate(zip(segments, contexts)):
        q, k, v = queries(i), keys(i), values(i)
        prefix = sum(c1 - c0 for c0, c1 in context)
        if prefix:
            k = torch.cat([keys(c) for c in context] + [k], dim=2)
            v = torch.cat([values(c) for c in context] + [v], dim=2)
        # positions within the sample: the prefix is 0..prefix-1, this segment's tokens follow it
        mask = None
        if prefix or eager or (window and prefix + b - a > window):
            mask = _cached_sample_mask(b - a, prefix, window, query.device)
        if eager:
            if groups > 1:
                k, v = _repeat_kv(k, groups), _repeat_kv(v, groups)
            out.append(_eager(q, k, v, mask, scale, softcap, sinks, dropout))
        else:
            out.append(
                F.scaled_dot_product_attention(
                    q,
                    k,
                    v,
                    attn_mask=mask,
                    is_causal=mask is None,
                    scale=scale,
                    dropout_p=dropout,
                    enable_gqa=groups > 1,
                )
            )
    if len(out) == 1:
        return out[0].transpose(1, 2).contiguous(), None
    # each sample's (1, n, heads, dim) view, concatenated along the tokens: the cat writes the
    # (batch, seq, heads, dim) layout the caller wants, so no transposed copy follows
    return torch.cat([o.transpose(1, 2) for o in out], dim=1), None


def _pieces(t: torch.Tensor, segments):
    """index -> t's tokens of segments[index] (an int) or of a (start, end) range. When the segments
    tile the row in order, one split makes every piece: under autograd each slice of a row would
    otherwise get its own backward that zero-fills a row-sized gradient, one per sample and layer
    (a tenth of a DPO step's attention time on CPU); a split's backward is one cat."""
    sizes = [b - a for a, b in segments]
    tiled = segments[0][0] == 0 and segments[-1][1] == t.shape[2]
    tiled = tiled and all(segments[i][1] == segments[i + 1][0] for i in range(len(segments) - 1))
    parts = t.split(sizes, dim=2) if tiled and min(sizes) > 0 else None
    where = {tuple(seg): i for i, seg in enumerate(segments)} if parts is not None else {}

    def piece(key):
        if isinstance(key, int):
            if parts is not None:
                return parts[key]
            key = segments[key]
        i = where.get(tuple(key))
        return parts[i] if i is not None else t[:, :, key[0] : key[1]]

    return piece


def _eager(q, k, v, mask, scale: float, softcap: float, sinks, dropout: float) -> torch.Tensor:
    """Attention from explicit scores, as transformers' eager attention computes it: softcap before the
    mask, a softmax in fp32 that includes each head's sink logit, the sink's column then dropped."""
    scores = (q @ k.transpose(-1, -2)) * scale
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~mask, float("-inf"))
    if sinks is not None:
        sink = sinks.reshape(1, -1, 1, 1).to(scores.dtype).expand(scores.shape[0], -1, scores.shape[2], 1)
        both = torch.cat([scores, sink], dim=-1)
        probs = F.softmax(both - both.amax(-1, keepdim=True), dim=-1, dtype=torch.float32)[..., :-1]
    else:
        probs = F.softmax(scores, dim=-1, dtype=torch.float32)
    probs = F.dropout(probs.to(q.dtype), p=dropout, training=dropout > 0)
    return probs @ v


def _sample_mask(n: int, prefix: int, window: int, device) -> torch.Tensor:
    """(n, prefix + n) bool: query t (position prefix + t) sees key position p when p <= prefix + t and,
    with a window, prefix + t - p < window."""
    q = torch.arange(prefix, prefix + n, device=device)[:, None]
    k = torch.arange(prefix + n, device=device)[None, :]
    mask = k <= q
    if window:
        mask &= q - k < window
    return mask


def _cached_sample_mask(n: int, prefix: int, window: int, device) -> torch.Tensor:
    """_sample_mask, built once per row and shape: every layer of a forward asks for the same ones."""
    key = (n, prefix, window, str(device))
    mask = _sample_cache.get(key)
    if mask is None:
        # bounded: a row has a few shapes per sample, long rows' masks are large (4k x 8k: 32 MiB)
        if sum(m.numel() for m in _sample_cache.values()) + n * (prefix + n) > 2**26:
            _sample_cache.clear()
        mask = _sample_cache[key] = _sample_mask(n, prefix, window, device)
    return mask


def _one_call(module, device: torch.device) -> bool:
    return row_calls(getattr(module, CALLS_ATTR, "auto"), device.type) == "whole_row"


def row_calls(calls: str, device_type: str) -> str:
    """What `calls` (CALLS) runs on a device: auto is per_sample on CPU, whole_row elsewhere."""
    return calls if calls != "auto" else ("per_sample" if device_type == "cpu" else "whole_row")


def _segments(position_ids, length: int, n_shared: int = 0) -> list[tuple[int, int]]:
    """(start, end) of each sample in the row, read off the position ids (rows not from batching.pack)."""
    if position_ids is None:
        return [(0, length)]
    starts = (position_ids[0] == n_shared).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0] + starts
    return list(zip(starts, starts[1:] + [length]))


def prefix_contexts(segments, n_shared: int) -> list[tuple]:
    """What each segment of a batching.pack row attends to before itself: the shared prefix of n_shared
    tokens, for every sample after it; nothing for the prefix itself or in a row without one."""
    return [((0, n_shared),) if n_shared and a >= n_shared else () for a, _ in segments]


def row_mask(segments, contexts, length: int, device="cpu", window: int = 0) -> torch.Tensor:
    """(1, 1, length, length) bool, True where query i may attend key j: causal within i's own segment,
    and every key of the segments i's context names (batching.pack's shared prefix, pack_groups' prefixes);
    with a window, only to keys fewer than `window` positions (counted within the sample) before i."""
    mask = torch.zeros(length, length, dtype=torch.bool)
    spos = torch.arange(length)  # each token's position within its sample
    for (a, b), context in zip(segments, contexts):
        mask[a:b, a:b] = torch.ones(b - a, b - a, dtype=torch.bool).tril()
        offset = 0
        for c0, c1 in context:
            mask[a:b, c0:c1] = True
            offset += c1 - c0
        spos[a:b] = torch.arange(offset, offset + b - a)
    mask, spos = mask.to(device), spos.to(device)
    if window:
        # a context's keys sit at the positions its own segment gives them, which are the positions
        # they hold in the sample that attends to them
        mask &= spos[:, None] - spos[None, :] < window
    # rows padded to a multiple of 16 elements: the memory-efficient CUDA kernel wants an aligned stride
    wide = torch.zeros(length, -(-length // 16) * 16, dtype=torch.bool, device=device)
    wide[:, :length] = mask
    return wide[None, None, :, :length]


def _row_mask(segments: tuple, contexts: tuple, length: int, device, window: int = 0) -> torch.Tensor:
    # one forward calls this once per layer with the same row: build each window's mask once (and again
    # only when gradient checkpointing recomputes the forward of the same row)
    row = (segments, contexts, length, str(device))
    if _mask_cache.get("row") != row:
        _mask_cache.clear()
        _mask_cache["row"] = row
    if window not in _mask_cache:
        _mask_cache[window] = row_mask(segments, contexts, length, device, window)
    return _mask_cache[window]


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, h, n, d = x.shape
    return x[:, :, None].expand(b, h, groups, n, d).reshape(b, h * groups, n, d)


def use_packed_attention(model, calls: str = "auto") -> None:
    """Switch a loaded transformers model to per-sample attention over packed rows (training only: it
    assumes rows come from batching.pack, with no padding mask and no KV cache); `calls` is how each row
    runs (CALLS, train.packed_attention)."""
    from transformers import AttentionInterface

    if calls not in CALLS:
        raise ValueError(f"packed attention calls: {calls!r} is not one of {', '.join(CALLS)}")
    AttentionInterface.register(NAME, packed_attention)
    for module in model.modules():  # every module: cheap, and whichever layers call attention are among them
        setattr(module, CALLS_ATTR, calls)
    model.set_attn_implementation(NAME)
