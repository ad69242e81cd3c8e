"""Per-token log-probs (loss.token_logprobs): the fused head gives the full-logits values and gradients,
packed rows (with a shared prefix) give what separate rows give, and each position knows its sample."""

import sys
from pathlib import Path

import torch

from lorakit.config import LoraConfig
from lorakit.models.lora import attach_lora
from lorakit.training import batching, loss
from lorakit.training.attention import use_packed_attention

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "conformance"))
from families import BY_NAME, build  # noqa: E402

PROMPT = [5, 17, 42, 8, 99, 3, 61]


def pair(seed, n_c, n_r):
    g = torch.Generator().manual_seed(seed)
    c, r = torch.randint(0, 300, (n_c,), generator=g).tolist(), torch.randint(0, 300, (n_r,), generator=g).tolist()
    return [{"input_ids": PROMPT + side, "labels": [-100] * len(PROMPT) + side} for side in (c, r)]


def lora(family, packed=True):
    model = attach_lora(build(BY_NAME[family]), LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    if packed:
        use_packed_attention(model)
    torch.manual_seed(1)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.1)
    return model.train()


def full_logits_logps(model, s):
    """log p(target) per supervised position from the model's own full logits, one unpadded sample."""
    ids = torch.tensor([s["input_ids"]])
    logits = model(input_ids=ids).logits[0, :-1].float()
    labels = torch.tensor(s["labels"][1:])
    keep = labels != -100
    return torch.log_softmax(logits[keep], -1).gather(1, labels[keep][:, None]).squeeze(1)


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_fused_token_logprobs_and_gradients_equal_full_logits():
    samples = pair(0, 9, 5) + pair(1, 4, 12)
    weights = torch.linspace(-1.0, 2.0, sum(sum(x != -100 for x in s["labels"][1:]) for s in samples))
    for family in ("qwen3", "gemma2"):  # gemma2: final logit softcap inside the fused backward
        ref_model = lora(family, packed=False)
        expected = torch.cat([full_logits_logps(ref_model, s) for s in samples])
        (expected * weights).sum().backward()
        model = lora(family)
        got = loss.token_logprobs(model, batching.pack(samples, share_prefix=True))
        assert got.grad_fn.name().endswith("_FusedHeadLogprobsBackward")
        (got * weights).sum().backward()
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5), family
        a, b = grads(model), grads(ref_model)
        assert a.keys() == b.keys() and a
        for name in a:
            scale = float(b[name].abs().max())
            assert torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-5 * scale), (family, name)


def test_unfused_and_padded_paths_give_the_same_logprobs():
    samples = pair(2, 6, 3)
    model = lora("qwen3")
    packed = batching.pack(samples, share_prefix=True)
    fused = loss.token_logprobs(model, packed)
    with torch.no_grad():
        chunked = loss.token_logprobs(model, packed)  # no grad: the chunked head, not the fused one
    padded = loss.token_logprobs(lora("qwen3", packed=False), batching.pad(samples, pad_id=0))
    assert torch.allclose(fused.detach(), chunked, rtol=1e-6, atol=1e-6)
    assert torch.allclose(padded.detach(), chunked, rtol=1e-5, atol=1e-5)
    assert torch.allclose(-chunked.sum(), loss.summed_loss(model, packed).detach(), rtol=1e-6)


def test_sample_index_names_each_supervised_position_s_sample():
    samples = pair(3, 4, 2) + pair(4, 3, 5)
    expected = [0] * 4 + [1] * 2 + [2] * 3 + [3] * 5  # completion tokens per sample, chosen first
    assert loss.sample_index(batching.pack(samples, share_prefix=True)).tolist() == expected
    assert loss.sample_index(batching.pack(samples)).tolist() == expected
    assert loss.sample_index(batching.pad(samples, pad_id=0)).tolist() == expected


def test_cpu_head_walks_the_vocabulary_in_chunks_exactly(monkeypatch):
    """The CPU head's online softmax (VOCAB_CHUNK entries at a time, here 37 of 300, the last chunk short)
    gives full-vocabulary log-probs and gradients, with a logit scale and a final softcap too."""
    monkeypatch.setattr(loss, "VOCAB_CHUNK", 37)
    g = torch.Generator().manual_seed(0)
    weight, hidden = torch.randn(300, 16, generator=g), torch.randn(11, 16, generator=g)
    targets = torch.randint(0, 300, (11,), generator=g)
    targets[0], targets[1] = 0, 299  # the first and the last entry of the vocabulary
    for scale, softcap in ((1.0, 0.0), (0.25, 0.0), (1.0, 3.0), (2.0, 3.0)):
        h = hidden.clone().requires_grad_(True)
        logits = loss._transform(h @ weight.T, scale, softcap)
        expected = torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1)
        (expected_grad,) = torch.autograd.grad(expected.sum(), h)  # row i's gradient is d logp_i / d h_i
        logp, minus_grad = loss._head_chunk(hidden, weight, targets, scale, softcap, True)
        assert torch.allclose(logp, expected.detach(), rtol=1e-5, atol=1e-6), (scale, softcap)
        assert torch.allclose(-minus_grad, expected_grad, rtol=1e-5, atol=1e-6), (scale, softcap)
        alone = loss._head_logprobs(hidden, weight, targets, scale, softcap)
        assert torch.allclose(alone, expected.detach(), rtol=1e-5, atol=1e-6), (scale, softcap)
