"""inference/cpu_head.py: the reordered head product for a few rows agrees with nn.Linear's, and training
(grad on) and many rows keep the module's own forward, bit for bit."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lorakit.inference import cpu_head


def test_few_rows_agree_with_linear_and_the_rest_is_untouched():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    model = LlamaForCausalLM(cfg)
    head = model.get_output_embeddings()
    inputs = {rows: torch.randn(rows, 1, 64) for rows in (1, 8, 100)}
    expected = {rows: torch.nn.functional.linear(x, head.weight) for rows, x in inputs.items()}
    cpu_head.install(model)
    cpu_head.install(model)  # idempotent: wrapped once
    assert head._lorakit_cpu_head and head.forward.__name__ == "forward" and "cpu_head" in head.forward.__module__
    with torch.no_grad():
        for rows, x in inputs.items():
            got = head(x)
            assert got.shape == expected[rows].shape and got.is_contiguous()
            torch.testing.assert_close(got, expected[rows], rtol=1e-5, atol=1e-5)
        assert torch.equal(head(inputs[100]), expected[100])  # many rows: nn.Linear's own forward
    x = inputs[8].clone().requires_grad_()
    assert torch.equal(head(x), expected[8])  # grad on (training): nn.Linear's own forward
