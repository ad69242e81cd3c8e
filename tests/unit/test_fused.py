"""The fused LoRA projection and SwiGLU forwards must train exactly like peft's and transformers' own."""

import pytest
import torch
from test_attention import SAMPLES
from tiny_models import tiny_qwen3

from lorakit.config import LoraConfig
from lorakit.models import precision
from lorakit.models.lora import attach_lora
from lorakit.training import batching, fused, loss
from lorakit.training.attention import use_packed_attention

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_model(dropout=0.0, seed=0, targets=TARGETS, **kwargs):
    model = attach_lora(tiny_qwen3(seed), LoraConfig(r=4, alpha=16, dropout=dropout, target_modules=targets, **kwargs))
    use_packed_attention(model)
    torch.manual_seed(seed + 1)
    for n, p in model.named_parameters():  # B starts at zero: make the low-rank term count
        if "lora_B" in n:
            p.data.normal_(0, 0.1)
    return model.train()


def loss_and_grads(model, batch):
    model.zero_grad()
    value = loss.summed_loss(model, batch)
    value.backward()
    return value.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(a, b, rtol=1e-5, atol=1e-6):
    """Loss to rtol; gradients to 10 rtol, with a floor of 1e-5 of each tensor's largest entry (the
    conformance matrix's): the fused functions order fp32 sums differently from peft's matmuls."""
    assert torch.allclose(a[0], b[0], rtol=rtol), (a[0], b[0])
    assert a[1].keys() == b[1].keys()
    for name in a[1]:
        floor = max(atol, 1e-5 * float(b[1][name].abs().max()))
        assert torch.allclose(a[1][name], b[1][name], rtol=rtol * 10, atol=floor), name


def test_fused_forwards_give_peft_s_loss_and_gradients():
    batch = batching.pack(SAMPLES, share_prefix=True)
    expected = loss_and_grads(lora_model(), batch)
    model = lora_model()
    frozen = fused.fuse(model)
    assert len(frozen) == 2 * len(TARGETS)  # every projection of both layers
    got = loss_and_grads(model, batch)
    assert_same(got, expected)
    assert all(not p.requires_grad for p in frozen)
    norm = model.get_base_model().model.norm
    assert norm(torch.randn(2, 32, requires_grad=True)).grad_fn.name() == "_RMSNormBackward"


class OffsetRMSNorm(torch.nn.Module):
    """Gemma's variant: scales by (1 + weight), which _RMSNorm does not compute."""

    def __init__(self, weight):
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.variance_epsilon = 1e-6

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon) * (1 + self.weight)


def test_only_norms_that_compute_the_same_and_can_be_inverted_are_fused():
    norm = tiny_qwen3().model.norm
    norm.weight.requires_grad_(False)
    assert fused._fusable_norm(norm)
    norm.weight.data[3] = 0.0  # its backward divides the output by the weight
    assert not fused._fusable_norm(norm)
    assert not fused._fusable_norm(OffsetRMSNorm(torch.rand(8)))


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ["up_proj", "o_proj"]])
def test_fused_forwards_with_plain_frozen_projections(targets):
    """Projections without LoRA (here the down projection) run fused as plain frozen linears."""
    batch = batching.pack(SAMPLES, share_prefix=True)
    expected = loss_and_grads(lora_model(targets=targets), batch)
    model = lora_model(targets=targets)
    frozen = fused.fuse(model)
    assert len(frozen) == 2 * (len(targets) + 1)  # + each layer's down projection
    assert_same(loss_and_grads(model, batch), expected)


def test_fused_mlp_is_used_and_matches():
    model = lora_model()
    mlp = model.get_base_model().model.layers[0].mlp
    x = torch.randn(1, 5, 32, requires_grad=True)
    expected = mlp(x)
    (ge,) = torch.autograd.grad(expected.sum(), x)
    fused.fuse(model)
    got = mlp(x)
    assert got.grad_fn.name() == "_SwiGLUDownBackward"
    (gg,) = torch.autograd.grad(got.sum(), x)
    assert torch.allclose(got, expected, atol=1e-6) and torch.allclose(gg, ge, atol=1e-6)


def test_half_frozen_weights_compute_in_float32_like_rounded_float32_weights():
    batch = batching.pack(SAMPLES, share_prefix=True)
    reference = lora_model()
    for _n, p in reference.named_parameters():  # what bf16 storage keeps, held in fp32
        if not p.requires_grad:
            p.data = p.data.bfloat16().float()
    expected = loss_and_grads(reference, batch)
    model = lora_model()
    for p in model.parameters():
        if not p.requires_grad:
            p.data = p.data.bfloat16()
    frozen = fused.fuse(model)
    assert precision.upcast_except(model, frozen) > 0
    assert {p.dtype for p in frozen} == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters() if all(p is not f for f in frozen))
    got = loss_and_grads(model, batch)
    assert_same(got, expected)
    assert fused._upcast_buffers  # the fp32 copies are reused per shape ...
    fused.release()
    assert not fused._upcast_buffers  # ... and freed when training ends
    assert_same(loss_and_grads(model, batch), expected)


def test_fused_follows_autocast():
    """In bf16 the two forwards round differently, and a random tiny model amplifies rounding: averaged
    over a few models, the fused one must be about as close to the fp32 gradients as peft's."""
    batch = batching.pack(SAMPLES, share_prefix=True)
    errors = {"peft": [], "fused": []}
    for seed in range(3):
        exact = loss_and_grads(lora_model(seed=seed), batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            peft_bf16 = loss_and_grads(lora_model(seed=seed), batch)
            model = lora_model(seed=seed)
            fused.fuse(model)
            fused_bf16 = loss_and_grads(model, batch)
        assert all(g.dtype == torch.float32 for g in fused_bf16[1].values())  # the LoRA weights' own dtype
        assert abs(fused_bf16[0] - exact[0]) / exact[0] < 1e-2
        for name, got in (("peft", peft_bf16), ("fused", fused_bf16)):
            errors[name] += [float((got[1][n] - g).norm() / g.norm()) for n, g in exact[1].items()]
    mean = {k: sum(v) / len(v) for k, v in errors.items()}
    assert mean["fused"] < 1.25 * mean["peft"], mean


def test_dropout_and_dora_keep_peft_s_forward():
    assert fused.fuse(lora_model(dropout=0.1)) == []
    assert fused.fuse(lora_model(use_dora=True)) == []


def test_a_disabled_adapter_runs_the_base_model():
    batch = batching.pack(SAMPLES)
    model = lora_model()
    with model.disable_adapter():
        expected = loss.summed_loss(model, batch).detach()
    fused.fuse(model)
    with model.disable_adapter():
        got = loss.summed_loss(model, batch).detach()
    assert torch.allclose(got, expected) and not torch.allclose(got, loss.summed_loss(model, batch).detach())


@pytest.mark.parametrize(
    "mode, device, expected",
    [("auto", "cpu", True), ("auto", "cuda:0", False), ("on", "cuda:0", True), ("off", "cpu", False)],
)
def test_enabled_where_measured(mode, device, expected):  # train.fused
    assert fused.enabled(mode, device) is expected
