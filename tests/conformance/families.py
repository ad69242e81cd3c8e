"""The model families of the conformance matrix: tiny random transformers configs built in memory
(nothing downloaded), each keeping the feature that changes what a fast path must compute."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import transformers

VOCAB = 300
WINDOW = 16  # shorter than the long samples of the matrix (test_matrix.SAMPLES)
SMALL = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    tie_word_embeddings=False,
)


@dataclass(frozen=True)
class Family:
    name: str
    feature: str  # what sets it apart, for docs/models.md
    config: str  # transformers config class
    kwargs: dict
    model: str = "AutoModelForCausalLM"
    vllm: str = ""  # architecture name in vLLM's supported-models list ("" when not listed)


FAMILIES = [
    Family(
        "llama3",
        "Llama 3 (GQA, rope scaling llama3)",
        "LlamaConfig",
        dict(
            SMALL,
            head_dim=8,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        ),
        vllm="LlamaForCausalLM",
    ),
    Family("qwen2", "Qwen2/2.5 (qkv bias)", "Qwen2Config", dict(SMALL), vllm="Qwen2ForCausalLM"),
    Family(
        "qwen2-window",
        "Qwen2 use_sliding_window (window 16 above layer 0)",
        "Qwen2Config",
        dict(SMALL, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1),
        vllm="Qwen2ForCausalLM",
    ),
    Family("qwen3", "Qwen3 (q/k norms)", "Qwen3Config", dict(SMALL, head_dim=8), vllm="Qwen3ForCausalLM"),
    Family(
        "qwen3-moe",
        "Qwen3-MoE (4 experts, top 2)",
        "Qwen3MoeConfig",
        dict(SMALL, head_dim=8, moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1),
        vllm="Qwen3MoeForCausalLM",
    ),
    Family(
        "mistral",
        "Mistral (sliding window 16)",
        "MistralConfig",
        dict(SMALL, head_dim=8, sliding_window=WINDOW),
        vllm="MistralForCausalLM",
    ),
    Family(
        "gemma2",
        "Gemma2 (attention softcap, final softcap, window 16)",
        "Gemma2Config",
        dict(
            SMALL,
            head_dim=8,
            sliding_window=WINDOW,
            attn_logit_softcapping=2.0,
            final_logit_softcapping=3.0,
            query_pre_attn_scalar=8,
        ),
        vllm="Gemma2ForCausalLM",
    ),
    Family(
        "gemma3",
        "Gemma3 (window/full layers, (1+w) norms, GELU)",
        "Gemma3TextConfig",
        dict(
            SMALL,
            head_dim=8,
            sliding_window=WINDOW,
            layer_types=["sliding_attention", "full_attention"],
            query_pre_attn_scalar=8,
        ),
        vllm="Gemma3ForCausalLM",
    ),
    Family("phi3", "Phi-3 (fused qkv and gate_up)", "Phi3Config", dict(SMALL, pad_token_id=0), vllm="Phi3ForCausalLM"),
    Family(
        "olmo2", "OLMo2 (post-norms, q/k norms)", "Olmo2Config", dict(SMALL, pad_token_id=0), vllm="Olmo2ForCausalLM"
    ),
    Family(
        "granite",
        "Granite (logits scaling, embedding/residual/attention multipliers)",
        "GraniteConfig",
        dict(SMALL, logits_scaling=4.0, embedding_multiplier=3.0, residual_multiplier=0.5, attention_multiplier=0.2),
        vllm="GraniteForCausalLM",
    ),
    Family(
        "gpt-neox",
        "GPT-NeoX (LayerNorm, parallel residual)",
        "GPTNeoXConfig",
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=256,
            use_parallel_residual=True,
            tie_word_embeddings=False,
        ),
        vllm="GPTNeoXForCausalLM",
    ),
    Family(
        "gpt-oss",
        "GPT-OSS (attention sinks, MoE, window 16)",
        "GptOssConfig",
        dict(
            SMALL,
            head_dim=8,
            num_local_experts=4,
            num_experts_per_tok=2,
            sliding_window=WINDOW,
            layer_types=["sliding_attention", "full_attention"],
        ),
        vllm="GptOssForCausalLM",
    ),
]
BY_NAME = {f.name: f for f in FAMILIES}


def build(family: Family, seed: int = 0):
    """The family's tiny random causal LM in fp32, eval mode, with the attention lorakit loads it with."""
    from lorakit.training.fastpaths import inference_attention

    config = getattr(transformers, family.config)(**family.kwargs)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # random init is too small for caps and sinks to matter: make them bite
        for name, p in model.named_parameters():
            if name.endswith("sinks"):
                p.normal_(0, 1.0)
            elif getattr(config, "attn_logit_softcapping", None) and name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(6.0)  # scores of a few units against a cap of 2
        if getattr(config, "final_logit_softcapping", None):
            model.get_output_embeddings().weight.mul_(50.0)  # logits of a few units against a cap of 3
    model.set_attn_implementation(inference_attention(type(model)))
    return model.eval()
