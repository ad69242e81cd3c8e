"""Fused training forwards for LoRA projections, SwiGLU MLPs and RMSNorms: fewer temporaries and saved tensors.

peft's LoRA linear computes `base(x) + B(A(x)) * scale` as four full-width tensors (base output, B
output, the scaled copy, the sum), and its backward as many again. On a CPU each of those is a fresh
multi-megabyte allocation, and glibc's heap, fragmented by them, kept ~1.4 GiB of freed memory resident
at the peak of a SmolLM2-135M step (mallinfo2; 3.1 GiB peak RSS in all). `_LoraLinear` writes the
low-rank term into the base output in place (one addmm) and keeps only x and the rank-r A(x) for the
backward. `_SwiGLUDown` runs an MLP's down projection on silu(gate) * up and keeps only gate and up
(and the rank-r term): autograd would also keep silu(gate) and the product, each as wide as the MLP.
`_RMSNorm` keeps its output, which the next projections keep anyway, instead of its input.

The fused LoRA linear also upcasts a frozen half-precision weight per call, so a CPU without native
bf16 can hold the base in bf16 (half the memory) and still compute in fp32 (precision.py).
Measured on a 2-core AVX2 EPYC, SmolLM2-135M, `benchmarks/train_speed.py --methods c` (docs/benchmarks.md):
peak RSS 2.73-2.99 -> 1.94-1.97 GiB with both, 251-256 -> 256-276 tokens/s (two runs each).

Applied where measured: on CPU by default (`train.fused: auto`); `on` forces it elsewhere, `off` keeps
peft's and transformers' own forwards. Anything unusual (DoRA, LoRA dropout, several adapters, bias on
B, another MLP or norm shape) keeps the original forward; a disabled or merged adapter runs the
base alone, as peft's forward does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def enabled(mode: str, device: str) -> bool:
    """train.fused on `device`: auto runs the fused forwards on CPU only, where they were measured."""
    return mode == "on" or (mode == "auto" and device == "cpu")


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    # under autocast the matmuls run in its dtype, as they would in peft's forward
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


_upcast_buffers: dict = {}


def _upcast(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`weight` in `dtype`. A frozen half-precision weight is copied into a scratch buffer kept per shape:
    a fresh multi-megabyte tensor per call would cost page faults (a measured share of each step,
    docs/benchmarks.md). Safe because
    each use ends (in stream order) before the next copy into the same buffer."""
    if weight.dtype == dtype:
        return weight
    key = (tuple(weight.shape), dtype, weight.device)
    buf = _upcast_buffers.get(key)
    if buf is None:
        buf = _upcast_buffers[key] = torch.empty(weight.shape, dtype=dtype, device=weight.device)
    return buf.copy_(weight)


def release() -> None:
    """Free the upcast scratch buffers (a run's worth of fp32 weight shapes) once training is over."""
    _upcast_buffers.clear()


class _NoBackward:
    """The ctx a Function's forward writes to when nothing will call its backward (no grad: decoding,
    a reference pass): it keeps nothing."""

    def save_for_backward(self, *tensors) -> None:
        pass


def _run(fn, *args):
    """fn.apply(*args), or, without grad, fn.forward itself: the same arithmetic, bit for bit, without
    autograd's per-call bookkeeping (measurable when decoding calls these 200 times per token)."""
    if torch.is_grad_enabled():
        return fn.apply(*args)
    return fn.forward(_NoBackward(), *args)


def _times_narrow(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """x @ m for a narrow m (LoRA's rank r columns), computed as (m^T @ x^T)^T, a transposed view. MKL
    runs a product whose output is r columns wide 2-4x slower than the same product laid out with the
    long dimension along the output's rows (rank 8, 496 tokens x 576-1536 features, one and two threads:
    benchmarks/dpo_speed.py's shapes); the sums are the same."""
    return (m.t() @ x.t()).t()


class _LoraLinear(torch.autograd.Function):
    """y = x W^T + bias + scale * (x A^T) B^T, with W frozen and A, B trainable."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scale, dtype):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).to(dtype)
        a, b = lora_a.to(dtype), lora_b.to(dtype)
        with torch.autocast(x.device.type, enabled=False):
            out = F.linear(x2, _upcast(weight, dtype), None if bias is None else bias.to(dtype))
            h = _times_narrow(x2, a.t())
            out.addmm_(h, b.t(), alpha=scale)
        ctx.save_for_backward(x2, h, weight, lora_a, lora_b)
        ctx.scale, ctx.dtype, ctx.x_shape, ctx.x_dtype = scale, dtype, shape, x.dtype
        return out.view(*shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        x2, h, weight, lora_a, lora_b = ctx.saved_tensors
        dtype = ctx.dtype
        g = grad.reshape(-1, grad.shape[-1]).to(dtype)
        a, b = lora_a.to(dtype), lora_b.to(dtype)
        gh = _times_narrow(g, b).mul_(ctx.scale)  # gradient at A(x), scale folded in
        grad_b = _lora_b_grad(g, h, ctx.scale, lora_b.dtype) if ctx.needs_input_grad[4] else None
        grad_a = (gh.t() @ x2).to(lora_a.dtype) if ctx.needs_input_grad[3] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = g @ _upcast(weight, dtype)
            if ctx.x_dtype == dtype:
                grad_x.addmm_(gh, a)
            else:  # autocast: sum the two paths' gradients in x's dtype, as autograd does for peft's forward
                grad_x = grad_x.to(ctx.x_dtype).add_(gh @ a)
            grad_x = grad_x.view(ctx.x_shape)
        return grad_x, None, None, grad_a, grad_b, None, None


def _lora_b_grad(g: torch.Tensor, h: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """scale * g^T @ h, B's gradient (out x r), from the output's gradient g and the rank-r A(x)."""
    return _times_narrow(g.t(), h).mul_(scale).to(dtype).contiguous()


def _swiglu_grads(grad, gate, up, keep_product: bool = False):
    """Gradients of silu(gate) * up at gate and up, computed in fp32 and rounded once, with aten's own
    silu backward (autograd's, so the same arithmetic as the unfused MLP); with `keep_product` also
    silu(gate) * up itself (what the down projection's LoRA A gradient needs), from the same silu.
    Five passes over the MLP's width and two new buffers (1.3 ms against 2.8 for the sigmoid-based
    form on one thread, 501 tokens x 1536). `grad` is overwritten."""
    dtype = gate.dtype
    grad, gate, up = grad.float(), gate.float(), up.float()
    silu = F.silu(gate)
    grad_up = grad * silu
    product = silu.mul_(up).to(dtype) if keep_product else None
    grad_gate = torch.ops.aten.silu_backward(grad.mul_(up), gate)
    return grad_gate.to(dtype), grad_up.to(dtype), product


class _SwiGLU(torch.autograd.Function):
    """silu(gate) * up, keeping only gate and up for the backward."""

    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return F.silu(gate).mul_(up)

    @staticmethod
    def backward(ctx, grad):
        return _swiglu_grads(grad, *ctx.saved_tensors)[:2]


class _SwiGLUDown(torch.autograd.Function):
    """down(silu(gate) * up), down a frozen linear with an optional LoRA term: the product, as wide as
    the MLP, is recomputed in the backward instead of kept (a sixth of the activations saved per token)."""

    @staticmethod
    def forward(ctx, gate, up, weight, bias, lora_a, lora_b, scale, dtype):
        shape = gate.shape
        with torch.autocast(gate.device.type, enabled=False):
            p = F.silu(gate.reshape(-1, shape[-1]).to(dtype)).mul_(up.reshape(-1, shape[-1]).to(dtype))
            out = F.linear(p, _upcast(weight, dtype), None if bias is None else bias.to(dtype))
            h = None
            if lora_a is not None:
                h = _times_narrow(p, lora_a.to(dtype).t())
                out.addmm_(h, lora_b.to(dtype).t(), alpha=scale)
        ctx.save_for_backward(gate, up, h, weight, lora_a, lora_b)
        ctx.scale, ctx.dtype = scale, dtype
        return out.view(*shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        gate, up, h, weight, lora_a, lora_b = ctx.saved_tensors
        dtype, width = ctx.dtype, gate.shape[-1]
        g = grad.reshape(-1, grad.shape[-1]).to(dtype)
        gate2, up2 = gate.reshape(-1, width), up.reshape(-1, width)
        grad_a = grad_b = None
        grad_p = g @ _upcast(weight, dtype)
        want_a = lora_a is not None and ctx.needs_input_grad[4]
        gh = None
        if lora_a is not None:
            a, b = lora_a.to(dtype), lora_b.to(dtype)
            gh = _times_narrow(g, b).mul_(ctx.scale)
            if ctx.needs_input_grad[5]:
                grad_b = _lora_b_grad(g, h, ctx.scale, lora_b.dtype)
            grad_p.addmm_(gh, a)
        # the product silu(gate) * up, recomputed for A's gradient, comes out of the same silu pass
        grad_gate, grad_up, p = _swiglu_grads(grad_p, gate2, up2, keep_product=want_a)
        if want_a:
            grad_a = (gh.t() @ p.to(dtype)).to(lora_a.dtype)
        return (grad_gate.view(gate.shape), grad_up.view(up.shape), None, None, grad_a, grad_b, None, None)


class _RMSNorm(torch.autograd.Function):
    """weight * x / rms(x), keeping its output instead of its input: the output is what the next
    projections keep anyway (the same storage), so the residual stream's x need not be kept at all."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True).add_(eps))
        out = (x * r).mul_(weight)
        ctx.save_for_backward(out, weight, r)
        return out

    @staticmethod
    def backward(ctx, grad):
        out, weight, r = ctx.saved_tensors
        y = out / weight  # x / rms(x); fuse() only takes weights without zeros
        gy = grad * weight
        return gy.sub_(y.mul_((gy * y).mean(-1, keepdim=True))).mul_(r), None, None


def _fusable_norm(module) -> bool:
    """A frozen RMSNorm without zero weights whose forward computes what _RMSNorm does (checked on a random
    input: variants such as (1 + weight) scaling fail it)."""
    weight = getattr(module, "weight", None)
    eps = getattr(module, "variance_epsilon", None)
    if (
        not type(module).__name__.endswith("RMSNorm")
        or not isinstance(weight, torch.nn.Parameter)
        or eps is None
        or weight.requires_grad
        or weight.dim() != 1
        or bool((weight == 0).any())
        or list(module.children())
    ):
        return False
    x = torch.randn(3, weight.shape[0], generator=torch.Generator().manual_seed(0)).to(weight.device)
    with torch.no_grad():
        return torch.allclose(
            module(x), _RMSNorm.apply(x, weight.float(), eps).to(module(x).dtype), rtol=1e-3, atol=1e-5
        )


def _norm_forward(module):
    original = module.forward

    def forward(x):
        # in fp32 only: from a half-precision output the input could not be recovered exactly
        if x.dtype != torch.float32 or module.weight.dtype != torch.float32:
            return original(x)
        return _run(_RMSNorm, x, module.weight, module.variance_epsilon)

    return forward


def _fusable_lora(module) -> bool:
    from peft.tuners.lora import Linear

    return (
        type(module) is Linear
        and type(module.base_layer) is torch.nn.Linear
        and list(module.active_adapters) == ["default"]
        and not module.fan_in_fan_out
        and not module.use_dora.get("default", False)
        and isinstance(module.lora_dropout["default"], torch.nn.Identity)
        and module.lora_B["default"].bias is None
        and not any(p.requires_grad for p in module.base_layer.parameters())
    )


def _lora_forward(module):
    original = module.forward

    def forward(x, *args, **kwargs):
        if args or kwargs or module.disable_adapters or module.merged:
            return original(x, *args, **kwargs)
        base = module.base_layer
        return _run(
            _LoraLinear,
            x,
            base.weight,
            base.bias,
            module.lora_A["default"].weight,
            module.lora_B["default"].weight,
            module.scaling["default"],
            _compute_dtype(x),
        )

    return forward


def _fusable_mlp(module) -> bool:
    # the Llama / Qwen / Mistral MLP: down_proj(act_fn(gate_proj(x)) * up_proj(x)) with act_fn silu
    act = getattr(module, "act_fn", None)
    if not (
        {n for n, _ in module.named_children()} == {"gate_proj", "up_proj", "down_proj", "act_fn"}
        and (isinstance(act, torch.nn.SiLU) or type(act).__name__ == "SiLUActivation")
    ):
        return False
    # and its forward is exactly that (checked on a probe input, as for norms: a subclass may add to it)
    weight = next(module.gate_proj.parameters())
    width = module.gate_proj.in_features if hasattr(module.gate_proj, "in_features") else weight.shape[-1]
    dtype = weight.dtype if weight.is_floating_point() else torch.float32
    x = torch.randn(2, width, generator=torch.Generator().manual_seed(0)).to(weight.device, dtype)
    with torch.no_grad():
        try:
            expected = module.down_proj(F.silu(module.gate_proj(x)) * module.up_proj(x))
            return torch.allclose(module(x), expected, rtol=1e-3, atol=1e-5)
        except RuntimeError:  # e.g. quantised projections that want another input dtype: keep its forward
            return False


def _frozen_linear(module) -> bool:
    return type(module) is torch.nn.Linear and not any(p.requires_grad for p in module.parameters())


def _mlp_forward(module):
    down = module.down_proj
    if _fusable_lora(down):

        def forward(x):
            gate, up = module.gate_proj(x), module.up_proj(x)
            lora = not (down.disable_adapters or down.merged)
            return _run(
                _SwiGLUDown,
                gate,
                up,
                down.base_layer.weight,
                down.base_layer.bias,
                down.lora_A["default"].weight if lora else None,
                down.lora_B["default"].weight if lora else None,
                down.scaling["default"],
                _compute_dtype(gate),
            )
    elif _frozen_linear(down):

        def forward(x):
            gate, up = module.gate_proj(x), module.up_proj(x)
            return _run(_SwiGLUDown, gate, up, down.weight, down.bias, None, None, 0.0, _compute_dtype(gate))
    else:

        def forward(x):
            return down(_run(_SwiGLU, module.gate_proj(x), module.up_proj(x)))

    return forward


# set on each module whose forward fuse() replaced: "swiglu", "rmsnorm" or "lora" (summary() counts them)
MARK = "_lorakit_fused"


def fuse(model) -> list[torch.nn.Parameter]:
    """Switch `model`'s eligible LoRA projections and SwiGLU MLPs to the fused forwards (for training).
    Returns the frozen base weights the fused functions read: they may stay in half precision, since
    each is upcast per call to the compute dtype. Eligibility is checked per module on what it computes
    (children, activation, a norm's output on a probe), never on the model's name."""
    frozen = []
    mlps = [m for m in model.modules() if _fusable_mlp(m)]
    downs = {id(m.down_proj) for m in mlps}
    for module in mlps:
        module.forward = _mlp_forward(module)
        setattr(module, MARK, "swiglu")
        down = module.down_proj
        if _fusable_lora(down):
            frozen.append(down.base_layer.weight)
        elif _frozen_linear(down):
            frozen.append(down.weight)
    for module in model.modules():
        if _fusable_norm(module):
            module.forward = _norm_forward(module)
            setattr(module, MARK, "rmsnorm")
        elif id(module) not in downs and _fusable_lora(module):
            module.forward = _lora_forward(module)
            setattr(module, MARK, "lora")
            frozen.append(module.base_layer.weight)
    return frozen


def summary(model) -> dict[str, int]:
    """How many modules of each kind run a fused forward, e.g. {"lora": 12, "swiglu": 2, "rmsnorm": 5}."""
    counts: dict[str, int] = {}
    for module in model.modules():
        kind = getattr(module, MARK, None)
        if kind:
            counts[kind] = counts.get(kind, 0) + 1
    return counts
