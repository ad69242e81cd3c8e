"""Per-sample attention over packed rows, and samples that share a prefix stored once, must give the
loss and gradients of each sample trained alone."""

import pytest
import torch
from tiny_models import tiny_qwen3

from lorakit.training import batching, loss
from lorakit.training.attention import _segments, prefix_contexts, row_mask, use_packed_attention


def with_prefix(prefix, n, n_prompt, seed):
    """A sample that starts with `prefix` (unsupervised), then n own tokens of which n_prompt are prompt."""
    g = torch.Generator().manual_seed(seed)
    own = torch.randint(0, 300, (n,), generator=g).tolist()
    return {"input_ids": prefix + own, "labels": [-100] * (len(prefix) + n_prompt) + own[n_prompt:]}


PREFIX = [7, 8, 9, 10, 11, 12]
SAMPLES = [with_prefix(PREFIX, 12, 3, 1), with_prefix(PREFIX, 5, 1, 2), with_prefix(PREFIX, 20, 9, 3)]


def loss_and_grads(model, batch):
    model.zero_grad()
    value = loss.summed_loss(model, batch)
    value.backward()
    return value.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_shared_prefix_length_stops_before_the_first_supervised_label():
    assert batching.shared_prefix_length(SAMPLES) == len(PREFIX)
    # a sample supervised from its 4th token: position 2 predicts it, so only 0..2 may be shared
    early = {"input_ids": PREFIX + [1, 2], "labels": [-100, -100, -100] + PREFIX[3:] + [1, 2]}
    assert batching.shared_prefix_length(SAMPLES + [early]) == 2
    assert batching.shared_prefix_length(SAMPLES[:1]) == 0


def test_pack_with_a_shared_prefix_stores_it_once():
    b = batching.pack(SAMPLES, share_prefix=True)
    n = len(PREFIX)
    assert int(b["shared_prefix"]) == n
    assert b["input_ids"].shape[1] == sum(len(s["input_ids"]) for s in SAMPLES) - 2 * n
    assert b["position_ids"][0, : n + 12].tolist() == list(range(n + 12))
    assert b["position_ids"][0, n + 12].item() == n  # the second sample continues after the prefix
    assert batching.real_tokens(b) == sum(len(s["input_ids"]) for s in SAMPLES)
    assert batching.supervised_tokens(b) == batching.supervised_tokens(batching.pack(SAMPLES))


# train.packed_attention: per-sample calls (CPU default) or one masked call (GPU default)
@pytest.mark.parametrize("mode", ["per_sample", "whole_row"])
@pytest.mark.parametrize("share", [False, True])
def test_packed_attention_matches_transformers_masking(share, mode):
    reference = tiny_qwen3()
    plain = batching.pack(SAMPLES)
    del plain["segments"]  # transformers' own block-diagonal mask from the position ids
    expected, expected_grads = loss_and_grads(reference, plain)
    model = tiny_qwen3()
    use_packed_attention(model, mode)
    got, grads = loss_and_grads(model, batching.pack(SAMPLES, share_prefix=share))
    assert torch.allclose(got, expected, rtol=1e-5), (got, expected)
    for name, g in expected_grads.items():
        assert torch.allclose(grads[name], g, rtol=1e-4, atol=1e-6), name


def test_packed_attention_refuses_a_padding_mask():
    model = tiny_qwen3()
    use_packed_attention(model)
    with pytest.raises(ValueError, match="one packed row without an attention mask"):
        loss.summed_loss(model, batching.pad(SAMPLES, pad_id=0))


@pytest.mark.parametrize("share", [False, True])
def test_pack_gives_the_segments_the_position_ids_imply(share):
    b = batching.pack(SAMPLES, share_prefix=share)
    n = b.get("shared_prefix", 0)
    assert b["segments"] == _segments(b["position_ids"], b["input_ids"].shape[1], n)
    assert all(isinstance(x, int) for seg in b["segments"] for x in seg)  # no device read per layer


def test_row_mask_is_causal_within_samples_and_open_to_the_prefix():
    segments = [(0, 2), (2, 4), (4, 5)]
    m = row_mask(segments, prefix_contexts(segments, 2), length=5)[0, 0].int().tolist()
    assert m == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 0, 0, 1]]


def test_row_mask_window_counts_positions_within_the_sample():
    # prefix of 2, samples (2, 5) and (5, 6): positions 2,3,4 and 2; a window of 2 sees itself and one before
    segments = [(0, 2), (2, 5), (5, 6)]
    m = row_mask(segments, prefix_contexts(segments, 2), length=6, window=2)[0, 0].int().tolist()
    assert m == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [0, 1, 1, 0, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 0, 1, 1, 0],
        [0, 1, 0, 0, 0, 1],
    ]


@pytest.mark.parametrize("calls, per_layer", [("per_sample", len(SAMPLES)), ("whole_row", 1), ("auto", len(SAMPLES))])
def test_the_setup_choice_of_calls_reaches_every_layer(calls, per_layer, monkeypatch):
    """train.packed_attention, handed to use_packed_attention once, decides each layer's SDPA calls (auto on
    this CPU: per sample). Counted on the real function, wrapped."""
    import torch.nn.functional as F

    real, seen = F.scaled_dot_product_attention, []
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: seen.append(1) or real(*a, **k))
    model = tiny_qwen3()
    use_packed_attention(model, calls)
    with torch.no_grad():
        loss.summed_loss(model, batching.pack(SAMPLES))
    assert len(seen) == per_layer * model.config.num_hidden_layers


def test_unknown_calls_are_refused():
    with pytest.raises(ValueError, match="'mask' is not one of auto, per_sample, whole_row"):
        use_packed_attention(tiny_qwen3(), "mask")
