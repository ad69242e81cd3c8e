"""What a run will do before it does it: steps, tokens, trainable parameters, a memory estimate.

`plan_run(cfg)` is the public entry (`lorakit train --dry-run`); `resolve_inputs` is what the plan and
the training loop's setup share: checks, model path, tokenizer, tokenized data, step count, dtypes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorakit.errors import LorakitError
from lorakit.training import batching
from lorakit.training.objectives import objective_for

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# train.pack_tokens=auto on CUDA: the budget it picks stays within these bounds
AUTO_PACK_TOKENS = (1024, 16384)
# train.pack_tokens=auto on CPU: batch_size samples per forward, but no packed row over this many tokens per
# sample (512 at batch 4); a long run's peak RSS otherwise follows its longest micro-batch (docs/benchmarks.md)
CPU_TOKENS_PER_SAMPLE = 128


@dataclass
class Plan:
    train_samples: int
    eval_samples: int
    train_tokens: int
    supervised_tokens: int
    samples_per_step: int
    steps: int
    model_params: int
    weight_dtype: str
    device: str
    memory_gb: float
    notes: list[str] = field(default_factory=list)  # e.g. why the weights train in another dtype
    unit: str = "samples"  # what the objective trains on: samples, pairs, ...

    def lines(self) -> list[str]:
        return [
            f"data: {self.train_samples} train / {self.eval_samples} eval {self.unit}, "
            f"{self.train_tokens:,} tokens ({self.supervised_tokens:,} with loss) per epoch",
            f"steps: {self.steps} optimizer steps of {self.samples_per_step} {self.unit}",
            f"model: {self.model_params / 1e6:,.1f}M parameters in {self.weight_dtype} on {self.device}",
            f"memory estimate: ~{self.memory_gb:.1f} GB peak (weights + LoRA state + activations)",
        ]


def count_params(model_path: Path) -> int:
    """Parameter count read from safetensors headers, without loading any weights; for a folder that has
    only config.json (planning for a model not downloaded yet), from the model built on the meta device."""
    from safetensors import safe_open

    files = list(Path(model_path).glob("*.safetensors"))
    if not files:
        return _count_params_from_config(model_path)
    total = 0
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                n = 1
                for d in st.get_slice(k).get_shape():
                    n *= d
                total += n
    return total


def _count_params_from_config(model_path: Path) -> int:
    """Builds the model with one and with two layers on the meta device (no memory, no init) and scales the
    difference to every layer: as exact as building the whole model, in a fraction of the time."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    layers = AutoConfig.from_pretrained(str(model_path)).num_hidden_layers

    def count(n: int) -> int:
        config = AutoConfig.from_pretrained(str(model_path), num_hidden_layers=n)
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[:n]
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return sum(p.numel() for p in model.parameters())  # tied weights counted once, as stored

    one = count(1)
    return one + (layers - 1) * (count(2) - one)


def estimate_memory_gb(
    model_path: Path,
    n_params: int,
    weight_dtype: str,
    tokens_micro: int,
    lora_params: int,
    gradient_checkpointing: bool,
    compute_dtype: str | None = None,
    quantize: str = "none",
) -> float:
    """A rough upper estimate: weights, LoRA params with grads and Adam moments, saved activations (in
    the compute dtype, by default the weights'), and one chunk of LM-head logits. Good to a factor of
    ~1.5, enough to pick a preset (checked against measured GPU peaks in docs/benchmarks.md)."""
    cfg = json.loads((Path(model_path) / "config.json").read_text())
    vocab = cfg.get("vocab_size", 32000)
    weights = weight_bytes(model_path, n_params, weight_dtype, quantize)
    lora_state = lora_params * 16
    activations = tokens_micro * activation_bytes_per_token(
        model_path, compute_dtype or weight_dtype, gradient_checkpointing
    )
    logits = 1024 * vocab * 4 * 3
    return (weights + lora_state + activations + logits) / 1e9


# bytes per weight of a bitsandbytes-quantised linear layer: NF4 packs two per byte, plus one absmax per
# 64 weights (itself quantised to 8 bits with double quantisation); int8 keeps one float per row
QUANTIZED_BYTES = {"4bit": 0.5 + 1 / 64, "8bit": 1.0}


def weight_bytes(model_path: Path, n_params: int, weight_dtype: str, quantize: str = "none") -> float:
    """The base's weights in memory. A quantised base (QLoRA) stores its decoder layers' linear weights
    in 4 or 8 bits; embeddings, the LM head and the norms stay in the weight dtype."""
    full = BYTES.get(weight_dtype, 4)
    if quantize not in QUANTIZED_BYTES:
        return n_params * full
    linear = _linear_weight_count(model_path)
    return linear * QUANTIZED_BYTES[quantize] + (n_params - linear) * full


def activation_bytes_per_token(model_path: Path, weight_dtype: str, gradient_checkpointing: bool) -> int:
    """Activations kept for backward per token of a micro-batch: all layers' without checkpointing, one
    layer's plus every layer's input with it."""
    cfg = json.loads((Path(model_path) / "config.json").read_text())
    hidden = cfg.get("hidden_size", 1024)
    inter = cfg.get("intermediate_size", 4 * hidden)
    layers = cfg.get("num_hidden_layers", 12)
    b = BYTES.get(weight_dtype, 4)
    per_layer = (10 * hidden + 4 * inter) * b
    return per_layer * (1 if gradient_checkpointing else layers) + hidden * layers * b


def lora_param_count(model_path: Path, r: int, targets) -> int:
    """LoRA parameters for rank r on the targeted projections (all linear layers for 'all-linear')."""
    shapes, layers = _projection_shapes(model_path)
    names = shapes if targets == "all-linear" else [t for t in targets if t in shapes]
    return layers * sum(r * (shapes[n][0] + shapes[n][1]) for n in names)


def _linear_weight_count(model_path: Path) -> int:
    """Weights in the decoder layers' projections: what a quantised base stores in 4 or 8 bits."""
    shapes, layers = _projection_shapes(model_path)
    return layers * sum(a * b for a, b in shapes.values())


def _projection_shapes(model_path: Path) -> tuple[dict[str, tuple[int, int]], int]:
    cfg = json.loads((Path(model_path) / "config.json").read_text())
    h = cfg.get("hidden_size", 1024)
    i = cfg.get("intermediate_size", 4 * h)
    layers = cfg.get("num_hidden_layers", 12)
    heads = cfg.get("num_attention_heads", 16)
    kv = cfg.get("num_key_value_heads", heads)
    hd = cfg.get("head_dim", h // heads)
    shapes = {
        "q_proj": (h, heads * hd),
        "k_proj": (h, kv * hd),
        "v_proj": (h, kv * hd),
        "o_proj": (heads * hd, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }
    return shapes, layers


@dataclass
class Inputs:
    """Everything a run needs decided before any weights load; shared by the plan and the loop's setup."""

    device: str
    model_path: Path
    tokenizer: Any
    data: Any  # lorakit.data.PreparedData
    samples_per_step: int
    n_steps: int
    use_fused: bool
    weight_dtype: str
    upcast: bool  # frozen weights stored in weight_dtype, computed in float32
    dtype_note: str | None

    @property
    def compute_dtype(self) -> str:
        return "float32" if self.upcast else self.weight_dtype


def resolve_inputs(cfg, dist, device: str, replay: bool = False) -> Inputs:
    """Check the config against this machine, resolve the model, tokenize the data, count the steps.

    With `replay`, data.replay's base-model answers are added (generated on first use): training
    needs them; a plan does not generate.
    """
    from lorakit import settings
    from lorakit.models import cache_root, load_tokenizer, precision, resolve_model
    from lorakit.models.template_override import apply_chat_template
    from lorakit.training import fused
    from lorakit.training.tracking import check_backends

    settings.refuse_retired()
    t = cfg.train
    sharded = t.fsdp and dist.world > 1
    _check_fast_paths(t, sharded)
    check_backends(cfg.tracking)
    if cfg.model.quantize != "none" and not device.startswith("cuda"):
        raise LorakitError(
            f"model.quantize: {cfg.model.quantize} (QLoRA) needs a CUDA GPU; set model.quantize=none to train on CPU"
        )
    if not cfg.data.path:
        raise LorakitError("data.path: no training data given (set data.path in the config or data.path=FILE)")

    model_path = resolve_model(cfg.model.name, cfg.model.source, cfg.model.cache_dir)
    tokenizer = apply_chat_template(load_tokenizer(model_path), cfg.model.chat_template)
    if cfg.data.replay and t.method != "sft":
        raise LorakitError(
            f"data.replay: mixes SFT answers into the data, but train.method is {t.method}; set data.replay=0"
        )
    objective = objective_for(cfg)
    data = objective.prepare(cfg.data, tokenizer, cache_root(cfg.model.cache_dir) / "prepared")
    if not data.train:
        raise LorakitError(f"data.path: no usable training {objective.unit} in {cfg.data.path}")
    if replay and cfg.data.replay:
        from lorakit.training.replay_answers import add_base_answers

        data = add_base_answers(cfg, data, model_path, tokenizer, device, cache_root(cfg.model.cache_dir) / "replay")

    samples_per_step = t.batch_size * t.grad_accum * dist.world
    n_steps = batching.total_steps(len(data.train), samples_per_step, t.epochs, t.max_steps)
    use_fused = fused.enabled(t.fused, device) and not sharded  # sharded: one dtype, peft's forwards
    weight_dtype, upcast, dtype_note = precision.training_weights(cfg.model.dtype, device, t.precision, use_fused)
    return Inputs(
        device, model_path, tokenizer, data, samples_per_step, n_steps, use_fused, weight_dtype, upcast, dtype_note
    )


def _check_fast_paths(t, sharded: bool) -> None:
    """Fast-path settings that cannot run as asked, refused before anything loads (a model whose attention
    packed attention does not compute is refused once loaded: fastpaths.choose)."""
    if t.attention == "packed" and not t.packing:
        raise LorakitError(
            "train.attention: packed needs train.packing=true (packed attention runs over packed "
            "rows); set train.attention=auto or fallback"
        )
    if t.fused == "on" and sharded:
        raise LorakitError(
            "train.fused: on cannot run sharded (train.fsdp with several processes keeps one "
            "dtype and peft's forwards); set train.fused=auto or off"
        )


def plan_run(cfg, dist=None) -> Plan:
    """The plan of the run `cfg` describes (data, steps, model size, memory), without loading weights.

    Example:
        >>> plan = plan_run(load_config("configs/demo.yaml"))
        >>> print("\n".join(plan.lines()))
    """
    from lorakit.training.distributed import Distributed, pick_device

    dist = dist or Distributed.from_env()
    inputs = resolve_inputs(cfg, dist, pick_device(cfg.train.device, dist))
    plan = estimate(
        cfg,
        inputs.data,
        inputs.model_path,
        inputs.samples_per_step,
        inputs.n_steps,
        inputs.weight_dtype,
        inputs.device,
        inputs.compute_dtype,
    )
    plan.notes = [inputs.dtype_note] if inputs.dtype_note else []
    return plan


def estimate(
    cfg,
    data,
    model_path,
    samples_per_step,
    n_steps,
    weight_dtype,
    device,
    compute_dtype=None,
    free_bytes: int | None = None,
) -> Plan:
    """The plan's figures from already tokenized data; the memory estimate sizes the largest forward.
    `free_bytes`: the device memory free before loading (default: asked of the GPU; `lorakit doctor
    --gpu-memory` passes a card's), from which pack_tokens=auto sizes its forwards on CUDA."""
    n_params = count_params(model_path)
    objective = objective_for(cfg)
    lengths = [objective.unit_tokens(u) for u in data.train]  # a DPO pair counts both of its rows
    t = cfg.train
    checkpointing = use_checkpointing(t.gradient_checkpointing, device)
    longest = sorted(lengths)[-samples_per_step:] or [0]  # the step of the longest samples
    tokens_micro = sum(longest[-t.batch_size :])  # its largest micro-batch of batch_size samples
    if t.packing and t.pack_tokens == "auto" and device.startswith("cuda"):
        free = free_bytes if free_bytes is not None else _cuda_free_bytes(device)
        # what auto will pick once the weights are in: half the memory they leave, as pack_budget does
        left = None if free is None else free - weight_bytes(model_path, n_params, weight_dtype, cfg.model.quantize)
        budget = batching.TokenBudget(
            AUTO_PACK_TOKENS[1]
            if left is None
            else auto_pack_tokens(left, activation_bytes_per_token(model_path, weight_dtype, checkpointing))
        )
    else:
        budget = pack_budget(t, device, model_path, weight_dtype, False, objective.rows_per_unit)
    if budget:  # filled: the step's samples in rows of up to budget tokens; a cap splits that micro-batch
        tokens_micro = max(longest[-1], min(budget.tokens, sum(longest) if budget.fill else tokens_micro))
    mem = estimate_memory_gb(
        model_path,
        n_params,
        weight_dtype,
        tokens_micro,
        lora_param_count(model_path, cfg.lora.r, cfg.lora.target_modules),
        checkpointing,
        compute_dtype,
        cfg.model.quantize,
    )
    return Plan(
        len(data.train),
        len(data.eval),
        sum(lengths),
        sum(objective.unit_supervised(u) for u in data.train),
        samples_per_step,
        n_steps,
        n_params,
        weight_dtype,
        device,
        mem,
        unit=objective.unit,
    )


def pack_budget(
    t, device: str, model_path, weight_dtype: str, checkpointing: bool, rows_per_unit: int = 1
) -> batching.TokenBudget | None:
    """Tokens per forward (train.pack_tokens). A number fills rows up to that many tokens. auto on CUDA
    fills half the GPU memory still free after loading with activations (the rest is for logits chunks,
    optimizer state and fragmentation); auto on CPU keeps batch_size samples per forward, where larger
    forwards gain little, and only caps the row at CPU_TOKENS_PER_SAMPLE x batch_size x rows_per_unit tokens
    (docs/benchmarks.md; a preference pair is two rows, chosen and rejected)."""
    if not t.packing or t.pack_tokens is None:
        return None
    if t.pack_tokens != "auto":
        return batching.TokenBudget(t.pack_tokens)
    if not device.startswith("cuda"):
        return batching.TokenBudget(CPU_TOKENS_PER_SAMPLE * t.batch_size * rows_per_unit, fill=False)
    per_token = activation_bytes_per_token(model_path, weight_dtype, checkpointing)
    return batching.TokenBudget(auto_pack_tokens(_cuda_free_bytes(device), per_token))


def auto_pack_tokens(free_bytes: int, per_token: int) -> int:
    """pack_tokens=auto on CUDA: half the free memory in activations, within AUTO_PACK_TOKENS."""
    low, high = AUTO_PACK_TOKENS
    return int(max(low, min(high, free_bytes // 2 // per_token)))


def _cuda_free_bytes(device: str) -> int | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.mem_get_info(torch.device(device))[0]


def use_checkpointing(choice, device: str) -> bool:
    """train.gradient_checkpointing: auto means on for CUDA, where memory is short, off on CPU."""
    return bool(choice) if choice != "auto" else device.startswith("cuda")
