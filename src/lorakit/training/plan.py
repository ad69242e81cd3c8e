"""What a run will do before it does it: steps, tokens, trainable parameters, a memory estimate."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


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

    def lines(self) -> list[str]:
        return [
            f"data: {self.train_samples} train / {self.eval_samples} eval samples, "
            f"{self.train_tokens:,} tokens ({self.supervised_tokens:,} with loss) per epoch",
            f"steps: {self.steps} optimizer steps of {self.samples_per_step} samples",
            f"model: {self.model_params / 1e6:,.1f}M parameters in {self.weight_dtype} on {self.device}",
            f"memory estimate: ~{self.memory_gb:.1f} GB peak (weights + LoRA state + activations)",
        ]


def count_params(model_path: Path) -> int:
    """Parameter count read from safetensors headers, without loading any weights."""
    from safetensors import safe_open

    total = 0
    for f in Path(model_path).glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                n = 1
                for d in st.get_slice(k).get_shape():
                    n *= d
                total += n
    return total


def estimate_memory_gb(model_path: Path, n_params: int, weight_dtype: str, tokens_per_micro: int,
                       lora_params: int, gradient_checkpointing: bool, compute_dtype: str | None = None) -> float:
    """A rough upper estimate: weights, LoRA params with grads and Adam moments, saved activations (in
    the compute dtype, by default the weights'), and one chunk of LM-head logits. Good to a factor of
    ~1.5, enough to pick a preset."""
    cfg = json.loads((Path(model_path) / "config.json").read_text())
    vocab = cfg.get("vocab_size", 32000)
    weights = n_params * BYTES.get(weight_dtype, 4)
    lora_state = lora_params * 16
    activations = tokens_per_micro * activation_bytes_per_token(model_path, compute_dtype or weight_dtype,
                                                                gradient_checkpointing)
    logits = 1024 * vocab * 4 * 3
    return (weights + lora_state + activations + logits) / 1e9


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
    cfg = json.loads((Path(model_path) / "config.json").read_text())
    h = cfg.get("hidden_size", 1024)
    i = cfg.get("intermediate_size", 4 * h)
    layers = cfg.get("num_hidden_layers", 12)
    heads = cfg.get("num_attention_heads", 16)
    kv = cfg.get("num_key_value_heads", heads)
    hd = cfg.get("head_dim", h // heads)
    shapes = {"q_proj": (h, heads * hd), "k_proj": (h, kv * hd), "v_proj": (h, kv * hd),
              "o_proj": (heads * hd, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    names = shapes if targets == "all-linear" else [t for t in targets if t in shapes]
    return layers * sum(r * (shapes[n][0] + shapes[n][1]) for n in names)
