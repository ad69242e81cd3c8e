"""How each Hugging Face family becomes llama.cpp's graph for it: the GGUF architecture, the hparam keys
that graph reads, and the weight transforms its converter (convert_hf_to_gguf.py) applies.

Targets the llama.cpp that the pinned node-llama-cpp (3.22.1) ships. A config whose maths that graph would
not reproduce (a sliding window it ignores, a RoPE variant it computes otherwise, an untied head it never
reads) is refused in one line, never approximated. Names of tensors come from gguf.TensorNameMap; a family
only reshapes what llama.cpp stores differently (stacked experts, Gemma's norms, GPT-NeoX's qkv).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# What llama.cpp does with output.weight for the architecture (its load_arch_tensors):
OPTIONAL, REQUIRED, EMBEDDING = "optional", "required", "embedding"  # falls back to / needs / never reads it


@dataclass(frozen=True)
class Family:
    arch: str  # gguf.MODEL_ARCH member name
    rotary_permute: bool  # llama.cpp's graph rotates adjacent pairs (LLAMA_ROPE_TYPE_NORM): interleave q/k rows
    output: str = OPTIONAL
    norm_plus_one: bool = False  # Gemma computes x * (1 + w): llama.cpp stores 1 + w
    layer_norm: bool = False  # LayerNorm with bias (GPT-NeoX), not RMSNorm
    rope_types: tuple = ("default",)  # the RoPE variants llama.cpp computes as transformers does
    hparams: Callable | None = None  # (writer, cfg) -> None: the family's own keys
    tensors: Callable | None = None  # (weights, cfg) -> weights: renamed/reshaped to the converter's names
    refusal: Callable | None = None  # cfg -> reason | None


def rope_parameters(cfg: dict, layer_type: str = "full_attention") -> dict:
    """The RoPE dict of a config, whichever way transformers wrote it (v5 rope_parameters, nested per
    layer type for Gemma 3, or the older rope_scaling + rope_theta)."""
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    params = params.get(layer_type, params) if isinstance(params, dict) else {}
    theta = params.get("rope_theta") or cfg.get("rope_theta") or cfg.get("rotary_emb_base") or 10000.0
    return {**params, "rope_theta": float(theta), "rope_type": params.get("rope_type") or params.get("type")
            or "default"}  # fmt: skip


def rotary_dims(cfg: dict) -> int:
    head_dim = head_dimension(cfg)
    factor = (
        rope_parameters(cfg).get("partial_rotary_factor")
        or cfg.get("partial_rotary_factor")
        or cfg.get("rotary_pct")
        or 1.0
    )
    return int(head_dim * factor)


def head_dimension(cfg: dict) -> int:
    return int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])


def n_experts(cfg: dict) -> int:
    return int(cfg.get("num_experts") or cfg["num_local_experts"])  # transformers 5 writes the latter


def sliding_layers(cfg: dict) -> list[bool] | None:
    """Per layer: does it attend through the sliding window? None when no layer does."""
    window, n = cfg.get("sliding_window"), int(cfg["num_hidden_layers"])
    if not window or cfg.get("use_sliding_window") is False:
        return None
    types = cfg.get("layer_types") or ["sliding_attention"] * n
    flags = [t == "sliding_attention" for t in types]
    return flags if any(flags) else None


# --- family hparams ---------------------------------------------------------------------------------


def _window_keys(writer, cfg: dict) -> None:
    flags = sliding_layers(cfg)
    if flags:
        writer.add_sliding_window(int(cfg["sliding_window"]))
        writer.add_sliding_window_pattern(flags)  # read per layer, not guessed from llama.cpp's default period


def _gemma2(writer, cfg: dict) -> None:
    _window_keys(writer, cfg)
    if cfg.get("attn_logit_softcapping"):
        writer.add_attn_logit_softcapping(float(cfg["attn_logit_softcapping"]))
    if cfg.get("final_logit_softcapping"):
        writer.add_final_logit_softcapping(float(cfg["final_logit_softcapping"]))


def _gemma3(writer, cfg: dict) -> None:
    _window_keys(writer, cfg)
    writer.add_rope_freq_base_swa(rope_parameters(cfg, "sliding_attention")["rope_theta"])
    if cfg.get("final_logit_softcapping"):
        writer.add_final_logit_softcapping(float(cfg["final_logit_softcapping"]))


def _granite(writer, cfg: dict) -> None:
    writer.add_attention_scale(float(cfg.get("attention_multiplier", 1.0)))
    writer.add_embedding_scale(float(cfg.get("embedding_multiplier", 1.0)))
    writer.add_residual_scale(float(cfg.get("residual_multiplier", 1.0)))
    writer.add_logit_scale(float(cfg.get("logits_scaling", 1.0)))


def _qwen3_moe(writer, cfg: dict) -> None:
    writer.add_expert_count(n_experts(cfg))
    writer.add_expert_used_count(int(cfg["num_experts_per_tok"]))
    writer.add_expert_feed_forward_length(int(cfg["moe_intermediate_size"]))


def _gpt_oss(writer, cfg: dict) -> None:
    import gguf

    writer.add_expert_count(n_experts(cfg))
    writer.add_expert_used_count(int(cfg["num_experts_per_tok"]))
    writer.add_expert_feed_forward_length(int(cfg["intermediate_size"]))
    _window_keys(writer, cfg)
    rope = rope_parameters(cfg)
    if rope["rope_type"] == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(rope["factor"]))
        writer.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
        writer.add_rope_scaling_yarn_beta_fast(float(rope.get("beta_fast", 32.0)))
        writer.add_rope_scaling_yarn_beta_slow(float(rope.get("beta_slow", 1.0)))


def _gpt_neox(writer, cfg: dict) -> None:
    writer.add_parallel_residual(bool(cfg.get("use_parallel_residual", True)))
    writer.add_layer_norm_eps(float(cfg["layer_norm_eps"]))


# --- family tensors ---------------------------------------------------------------------------------


def _stack_experts(weights: dict, cfg: dict) -> dict:
    """Qwen3-MoE keeps one Linear per expert; llama.cpp holds each projection of a layer as one
    [experts, out, in] tensor (ffn_*_exps)."""
    import torch

    count, out, stacked = n_experts(cfg), {}, {}
    for name, tensor in weights.items():
        if ".mlp.experts." not in name:
            out[name] = tensor
            continue
        prefix, rest = name.split(".mlp.experts.")
        expert, proj = rest.split(".", 1)
        stacked.setdefault(f"{prefix}.mlp.experts.{proj}", {})[int(expert)] = tensor
    for name, by_expert in stacked.items():
        out[name] = torch.stack([by_expert[e] for e in range(count)])
    return out


def _gpt_oss_experts(weights: dict, cfg: dict) -> dict:
    """GPT-OSS stores each layer's experts as x @ W ([experts, in, out]) with gate and up interleaved on the
    last dim (gate = [..., ::2], up = [..., 1::2]); llama.cpp reads separate [experts, out, in] gate, up and
    down tensors with [experts, out] biases, and the sinks as attn_sinks.weight."""
    out = {}
    for name, tensor in weights.items():
        if name.endswith("self_attn.sinks"):
            out[name + ".weight"] = tensor
        elif name.endswith("mlp.experts.gate_up_proj"):
            base = name[: -len("gate_up_proj")]
            out[base + "gate_proj.weight"] = tensor[..., ::2].transpose(1, 2).contiguous()
            out[base + "up_proj.weight"] = tensor[..., 1::2].transpose(1, 2).contiguous()
        elif name.endswith("mlp.experts.gate_up_proj_bias"):
            base = name[: -len("gate_up_proj_bias")]
            out[base + "gate_proj.bias"] = tensor[..., ::2].contiguous()
            out[base + "up_proj.bias"] = tensor[..., 1::2].contiguous()
        elif name.endswith("mlp.experts.down_proj"):
            out[name + ".weight"] = tensor.transpose(1, 2).contiguous()
        elif name.endswith("mlp.experts.down_proj_bias"):
            out[name[: -len("_bias")] + ".bias"] = tensor
        else:
            out[name] = tensor
    return out


def _gpt_neox_qkv(weights: dict, cfg: dict) -> dict:
    """GPT-NeoX interleaves q, k and v per head; llama.cpp's attn_qkv holds all q rows, then k, then v."""
    heads, out = int(cfg["num_attention_heads"]), {}
    for name, tensor in weights.items():
        if name.endswith(("attention.query_key_value.weight", "attention.query_key_value.bias")):
            per_head = tensor.reshape(heads, 3, -1, *tensor.shape[1:])
            tensor = per_head.transpose(0, 1).reshape(tensor.shape)
        out[name] = tensor
    return out


def llama3_rope_freqs(model_dir) -> np.ndarray:
    """Llama 3's RoPE scaling as llama.cpp applies it: per frequency, the divisor of the base frequency
    (rope_freqs.weight). Taken from transformers' own llama3 inverse frequencies, so it is theirs exactly."""
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = AutoConfig.from_pretrained(str(model_dir))
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    head_dim = config.head_dim
    base = rope_parameters(config.to_dict())["rope_theta"]
    plain = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    return (plain / scaled.double().numpy()).astype(np.float32)


# --- refusals ---------------------------------------------------------------------------------------


def _no_window(graph: str) -> Callable:
    def refusal(cfg: dict) -> str | None:
        if sliding_layers(cfg) and int(cfg["sliding_window"]) < int(cfg["max_position_embeddings"]):
            return (
                f"sliding-window attention (sliding_window {cfg['sliding_window']}) is not exported: "
                f"llama.cpp's {graph} graph attends over the whole context"
            )
        return None

    return refusal


def _gemma_scale(cfg: dict) -> str | None:
    # llama.cpp scales queries by 1/sqrt(head_dim) (1/sqrt(hidden/heads) for its 27B sizes only)
    scalar = cfg.get("query_pre_attn_scalar")
    if scalar is not None and int(scalar) != head_dimension(cfg):
        return f"query_pre_attn_scalar {scalar} != head_dim {head_dimension(cfg)}: llama.cpp scales by head_dim"
    return None


def _gemma2_refusal(cfg: dict) -> str | None:
    if cfg.get("tie_word_embeddings") is False:
        return "an untied lm_head is not exported: llama.cpp's gemma2 graph reads the embedding as the output"
    return _gemma_scale(cfg)


def _qwen3_moe_refusal(cfg: dict) -> str | None:
    if not cfg.get("norm_topk_prob"):
        return "norm_topk_prob false is not exported: llama.cpp's qwen3moe graph renormalises the top-k weights"
    if cfg.get("mlp_only_layers") or int(cfg.get("decoder_sparse_step", 1)) != 1:
        return "dense layers among the MoE ones (mlp_only_layers, decoder_sparse_step) are not in llama.cpp's qwen3moe"
    return None


def _gpt_oss_refusal(cfg: dict) -> str | None:
    # llama.cpp's gpt-oss graph hard-codes the released SwiGLU clamp and slope (ggml_swiglu_oai)
    alpha, limit = float(cfg.get("swiglu_alpha", 1.702)), float(cfg.get("swiglu_limit", 7.0))
    if abs(alpha - 1.702) > 1e-6 or abs(limit - 7.0) > 1e-6:
        return f"swiglu_alpha {alpha} / swiglu_limit {limit} are not exported: llama.cpp's gpt-oss uses 1.702 / 7.0"
    # llama.cpp's YaRN floors/ceils the correction range (ggml_rope_yarn_corr_dims); truncate: false (the
    # released checkpoints' setting) keeps it unrounded, which changes the blend of the frequencies between
    # the bounds: on the matrix's tiny config the probabilities then differ by ~10% in llama.cpp
    rope = rope_parameters(cfg)
    if rope["rope_type"] == "yarn" and rope.get("truncate") is False:
        return ("RoPE yarn with truncate false is not exported: llama.cpp's YaRN rounds the correction range "
                "this config keeps unrounded (truncate true is exported)")  # fmt: skip
    if rope["rope_type"] == "yarn" and {"attention_factor", "mscale", "mscale_all_dim"} & rope.keys():
        return "RoPE yarn with attention_factor/mscale is not exported: llama.cpp's gpt-oss takes 1 + 0.1 ln(factor)"
    return None


_LLAMA_ROPE = ("default", "llama3")
FAMILIES = {
    "llama": Family("LLAMA", rotary_permute=True, rope_types=_LLAMA_ROPE, refusal=_no_window("llama")),
    "mistral": Family("LLAMA", rotary_permute=True, refusal=_no_window("llama")),
    "qwen2": Family("QWEN2", rotary_permute=False, refusal=_no_window("qwen2")),
    "qwen3": Family("QWEN3", rotary_permute=False, refusal=_no_window("qwen3")),
    "qwen3_moe": Family(
        "QWEN3MOE", rotary_permute=False, hparams=_qwen3_moe, tensors=_stack_experts, refusal=_qwen3_moe_refusal
    ),
    "gemma2": Family(
        "GEMMA2", rotary_permute=False, output=EMBEDDING, norm_plus_one=True, hparams=_gemma2, refusal=_gemma2_refusal
    ),
    "gemma3_text": Family("GEMMA3", rotary_permute=False, norm_plus_one=True, hparams=_gemma3, refusal=_gemma_scale),
    "phi3": Family("PHI3", rotary_permute=False, refusal=_no_window("phi3")),
    "olmo2": Family("OLMO2", rotary_permute=False, output=REQUIRED, refusal=_no_window("olmo2")),
    "granite": Family("GRANITE", rotary_permute=True, hparams=_granite, refusal=_no_window("granite")),
    "gpt_neox": Family(
        "GPTNEOX", rotary_permute=False, output=REQUIRED, layer_norm=True, hparams=_gpt_neox, tensors=_gpt_neox_qkv
    ),
    "gpt_oss": Family(
        "GPT_OSS",
        rotary_permute=False,
        output=REQUIRED,
        rope_types=("default", "yarn"),
        hparams=_gpt_oss,
        tensors=_gpt_oss_experts,
        refusal=_gpt_oss_refusal,
    ),
}


def family_refusal(cfg: dict) -> str | None:
    """Why llama.cpp's graph for this config would compute something else, or None."""
    kind = cfg.get("model_type")
    if kind not in FAMILIES:
        return f"model type {kind!r} cannot be exported to GGUF yet (supported: {', '.join(sorted(FAMILIES))})"
    family = FAMILIES[kind]
    if family.refusal and (reason := family.refusal(cfg)):
        return reason
    rope = rope_parameters(cfg)
    if rope["rope_type"] not in family.rope_types:
        return f"RoPE type {rope['rope_type']!r} is not exported for {kind} (exported: {', '.join(family.rope_types)})"
    nested = "sliding_attention" in (cfg.get("rope_parameters") or {})
    if nested and rope_parameters(cfg, "sliding_attention")["rope_type"] != "default":
        return "RoPE scaling on sliding-window layers is not exported: llama.cpp scales only the full ones"
    return None
