"""A two-layer random Qwen3 (grouped-query attention, 300-token vocabulary) for unit tests of the loss
and attention paths: built in memory, nothing downloaded."""

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM


def tiny_qwen3(seed: int = 0) -> Qwen3ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=256,
    )
    cfg._attn_implementation = "sdpa"
    return Qwen3ForCausalLM(cfg).eval()
