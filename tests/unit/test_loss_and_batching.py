"""Packing must be invisible to the loss: a packed row gives the same per-sample losses as separate rows."""

import torch
import torch.nn.functional as F
from tiny_models import tiny_qwen3

from lorakit.training import batching, loss


def sample(n, n_prompt, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 300, (n,), generator=g).tolist()
    return {"input_ids": ids, "labels": [-100] * n_prompt + ids[n_prompt:]}


def reference_loss(model, s):
    """Plain full-logits loss of one unpadded sample, summed over supervised tokens."""
    ids = torch.tensor([s["input_ids"]])
    logits = model(input_ids=ids).logits[0, :-1]
    labels = torch.tensor(s["labels"][1:])
    return F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")


def test_packed_loss_equals_sum_of_separate_losses():
    model = tiny_qwen3()
    samples = [sample(17, 5, 1), sample(9, 3, 2), sample(30, 20, 3)]
    expected = sum(reference_loss(model, s) for s in samples)
    with torch.no_grad():
        packed = loss.summed_loss(model, batching.pack(samples))
        padded = loss.summed_loss(model, batching.pad(samples, pad_id=0))
    assert torch.allclose(packed, expected, rtol=1e-5), (packed, expected)
    assert torch.allclose(padded, expected, rtol=1e-5), (padded, expected)


def test_chunked_loss_matches_single_chunk(monkeypatch):
    model = tiny_qwen3()
    samples = [sample(40, 2, 4), sample(35, 1, 5)]
    b = batching.pack(samples)
    with torch.no_grad():
        whole = loss.summed_loss(model, b)
        monkeypatch.setattr(loss, "CHUNK", 7)
        chunked = loss.summed_loss(model, b)
    assert torch.allclose(whole, chunked, rtol=1e-6)


def test_pack_restarts_positions_and_never_predicts_across_samples():
    b = batching.pack([sample(4, 1, 0), sample(3, 1, 1)])
    assert b["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2]]
    # the last token of each sample has no target inside its own sample
    assert b["shift_labels"][0, 3].item() == -100 and b["shift_labels"][0, 6].item() == -100


def test_optimizer_steps_cover_epochs_and_are_reproducible():
    steps = list(batching.optimizer_steps(10, 4, epochs=2, max_steps=None, seed=1))
    assert [s for s, _, _ in steps] == [1, 2, 3, 4, 5, 6]
    first_epoch = sorted(i for _, e, idx in steps if e == 0 for i in idx)
    assert first_epoch == list(range(10))
    assert steps == list(batching.optimizer_steps(10, 4, epochs=2, max_steps=None, seed=1))
    assert batching.total_steps(10, 4, 2, None) == 6
    assert len(list(batching.optimizer_steps(10, 4, epochs=2, max_steps=3, seed=1))) == 3


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_fused_head_gives_the_same_loss_and_gradients_as_full_logits(monkeypatch):
    from lorakit.config import LoraConfig
    from lorakit.models.lora import attach_lora

    model = attach_lora(tiny_qwen3(), LoraConfig(r=4, alpha=8))
    torch.manual_seed(0)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.1)  # non-zero B so every LoRA weight gets a gradient
    samples = [sample(23, 5, 7), sample(31, 10, 8)]
    monkeypatch.setattr(loss, "CHUNK", 8)
    assert loss._fusable(model.get_base_model().get_output_embeddings())
    fused = loss.summed_loss(model, batching.pack(samples))
    fused.backward()
    got = _grads(model)
    model.zero_grad()
    expected = sum(reference_loss(model, s) for s in samples)
    expected.backward()
    want = _grads(model)
    assert torch.allclose(fused, expected, rtol=1e-5)
    assert got.keys() == want.keys() and len(got) > 0
    for k in got:
        assert torch.allclose(got[k], want[k], rtol=1e-4, atol=1e-6), k


def test_token_groups_fill_the_budget_and_keep_the_order():
    samples = [sample(n, 1, i) for i, n in enumerate([5, 6, 3, 9, 4])]
    groups = batching.token_groups(samples, budget=12)
    assert [[len(s["input_ids"]) for s in g] for g in groups] == [[5, 6], [3, 9], [4]]
    assert [len(g) for g in batching.token_groups(samples, budget=4)] == [1, 1, 1, 1, 1]  # long ones alone
    # one group per process at least: 27 tokens over 2 processes -> a budget of 14
    assert len(batching.token_groups(samples, budget=1000, min_groups=2)) == 2


def test_token_groups_count_a_shared_prefix_once():
    prefix = [7, 8, 9, 10, 11, 12]
    samples = [{"input_ids": prefix + [i] * 4, "labels": [-100] * 6 + [i] * 4} for i in range(1, 4)]
    # the prefix stops one token short of the first label (that token's prediction is supervised)
    assert batching.row_length(samples, share_prefix=True) == 5 + 3 * 5
    assert batching.row_length(samples) == 3 * 10
    assert len(batching.token_groups(samples, budget=20, share_prefix=True)) == 1
    assert len(batching.token_groups(samples, budget=20)) == 2


def test_pack_tokens_changes_the_split_not_the_gradient():
    """Fewer, larger forwards (train.pack_tokens) must give the step the same loss and gradient."""
    samples = [sample(n, 3, i) for i, n in enumerate([12, 20, 7, 15, 9, 11])]

    def step(micro):
        model = tiny_qwen3()
        total = sum(loss.summed_loss(model, mb) for mb in micro)
        total.backward()
        return total.detach(), [p.grad.clone() for p in model.parameters()]

    by_samples = batching.micro_batches(samples, 2, True, 0, share_prefix=True)
    by_tokens = batching.micro_batches(samples, 2, True, 0, share_prefix=True, budget=batching.TokenBudget(10_000))
    # a cap (train.pack_tokens: auto on CPU) keeps 2 samples per forward and splits only the row over 30
    capped = batching.micro_batches(samples, 2, True, 0, share_prefix=True, budget=batching.TokenBudget(30, fill=False))
    assert [mb["input_ids"].shape[1] for mb in capped] == [12, 20, 22, 20]
    assert (len(by_samples), len(by_tokens)) == (3, 1)
    (l1, g1), (l2, g2), (l3, g3) = step(by_samples), step(by_tokens), step(capped)
    assert torch.allclose(l1, l2, rtol=1e-5) and torch.allclose(l1, l3, rtol=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(g1, g2))
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(g1, g3))
