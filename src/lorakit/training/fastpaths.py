"""Which of lorakit's training fast paths a model gets, decided by what the model computes, not its name.

Packed attention (attention.py) computes causal softmax attention per sample, with per-layer sliding
windows, attention logit softcapping and attention sinks, exactly as transformers' eager attention does.
A model whose attention does anything else (listed in `_UNSUPPORTED`, or a model class that does not
route attention through transformers' attention interface) trains on transformers' own attention
instead: SDPA where the class supports it, else eager, over padded batches with an attention mask.
Not over packed rows: transformers masks a packed row block-diagonally only in models that hand the
position ids to their mask builders, and GPT-OSS, for one, does not (its samples would see each other:
the conformance matrix measured 8e-4 on the loss). Padding masks every model handles. The fused
forwards (fused.py) check each module's computation themselves; the fused LM head loss (loss.py)
applies the logit scaling and final softcap the model's forward applies.

The choice is the config's, made once at setup: `train.attention` (auto, packed, fallback),
`train.packed_attention` (how a packed row runs) and `train.fused` (fused forwards, resolved with the
weight dtype in plan.resolve_inputs). `choose` decides, `apply` switches the model, and `Paths.line()`
is the one line training prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lorakit.errors import LorakitError
from lorakit.training import attention, fused
from lorakit.training.loss import logit_transform

MODES = ("auto", "packed", "fallback")  # train.attention

# config attributes whose attention packed_attention does not compute: (attribute, what it is, active?)
_UNSUPPORTED = (
    ("attention_chunk_size", "chunked attention", bool),
    ("alibi", "ALiBi position bias", bool),
    ("position_embedding_type", "ALiBi position bias", lambda v: v == "alibi"),
    ("use_bidirectional_attention", "bidirectional attention", bool),
)


@dataclass
class Paths:
    """The paths one training run takes, and why."""

    packed: bool  # lorakit's packed attention (else transformers' own, `implementation`)
    implementation: str  # the attention implementation the model runs in training
    features: list[str] = field(default_factory=list)  # what packed attention computes beyond plain causal
    reason: str = ""  # why transformers' attention runs instead (packed False)
    calls: str = "auto"  # how packed attention runs a row (train.packed_attention; attention.CALLS)
    fused: dict = field(default_factory=dict)  # fused forwards applied, kind -> count
    head: list[str] = field(default_factory=list)  # what the loss applies to the LM head's output

    @property
    def packing(self) -> bool:
        """Whether micro-batches may be packed rows (batching.pack); else padded (batching.pad)."""
        return self.packed

    @property
    def share_prefix(self) -> bool:
        """Whether packed rows may store a shared prefix once (only packed attention reads that layout)."""
        return self.packed

    def record(self, device: str) -> dict:
        """What run.json keeps: the attention and fused forwards that ran, with the config's `auto`s resolved."""
        calls = attention.row_calls(self.calls, device.split(":")[0]) if self.packed else None
        return {
            "attention": self.implementation,
            "packed_attention": calls,
            "fallback_reason": self.reason or None,
            "fused": dict(sorted(self.fused.items())),
        }

    def line(self) -> str:
        if self.packed:
            att = "attention: lorakit packed" + (f" ({', '.join(self.features)})" if self.features else "")
        else:
            att = f"attention: transformers {self.implementation} fallback: {self.reason}"
        fused_part = ", ".join(f"{k} x{n}" for k, n in sorted(self.fused.items())) or "none"
        head = f"; logits: {', '.join(self.head)}" if self.head else ""
        return f"{att}; fused forwards: {fused_part}{head}"


def attention_features(model) -> tuple[list[str], list[str]]:
    """(what packed attention will compute for this model, what it cannot) from its config and modules."""
    config = _config(model)
    have, missing = [], []
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None) or []
    if window and (
        "sliding_attention" in layer_types or (not layer_types and getattr(config, "use_sliding_window", True))
    ):
        have.append(f"sliding window {window}")
    if getattr(config, "attn_logit_softcapping", None):
        have.append(f"softcap {config.attn_logit_softcapping:g}")
    if any(name.endswith(".sinks") or name == "sinks" for name, _ in model.named_parameters()):
        have.append("attention sinks")
    for attr, what, active in _UNSUPPORTED:
        if active(getattr(config, attr, None)) and what not in missing:
            missing.append(what)
    base = _base(model)
    if not getattr(base, "_supports_attention_backend", False):
        missing.append(f"{type(base).__name__} does not use transformers' attention interface")
    return have, missing


def choose(model, packing: bool = True, mode: str = "auto", calls: str = "auto") -> Paths:
    """Decide the attention path from train.packing, train.attention (`mode`) and train.packed_attention
    (`calls`); fused forwards are counted by `apply`, after they are switched on."""
    if mode not in MODES:
        raise ValueError(f"attention mode {mode!r} is not one of {', '.join(MODES)}")
    fallback_impl = "sdpa" if getattr(_base(model), "_supports_sdpa", False) else "eager"
    have, missing = attention_features(model)
    if mode == "packed" and (missing or not packing):
        why = ", ".join(missing) if missing else "train.packing is off (packed attention runs over packed rows)"
        raise LorakitError(
            f"train.attention: packed: {why}; set train.attention=auto (transformers' own "
            f"attention where lorakit's cannot run) or fallback"
        )
    if packing and not missing and mode != "fallback":
        return Paths(True, attention.NAME, have, calls=calls)
    if not packing:
        reason = "train.packing off (padded batches)"
    else:
        reason = ", ".join(missing) if missing else "train.attention=fallback"
        reason += " (padded batches)"
    return Paths(False, fallback_impl, have, reason)


def apply(model, paths: Paths, use_fused: bool) -> list:
    """Switch `model` to the chosen paths; returns the frozen weights the fused forwards read (see fused.fuse)."""
    frozen = fused.fuse(model) if use_fused else []
    paths.fused = fused.summary(model)
    scale, softcap = logit_transform(_config(model))
    paths.head = ([f"scale {scale:g}"] if scale != 1.0 else []) + ([f"final softcap {softcap:g}"] if softcap else [])
    if paths.packed:
        attention.use_packed_attention(model, paths.calls)
    else:
        model.set_attn_implementation(paths.implementation)
    return frozen


def inference_attention(model_class) -> str:
    """The attention a model class runs for generation: SDPA where it supports it, else eager (Gemma2
    and GPT-OSS refuse SDPA: softcapping and sinks)."""
    return "sdpa" if getattr(model_class, "_supports_sdpa", False) else "eager"


def _base(model):
    """The transformers model under a PEFT wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _config(model):
    return _base(model).config
