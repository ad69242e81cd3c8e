"""attach_lora: the adapter peft builds, its errors, and a quiet console."""

import warnings

import pytest
from tiny_models import tiny_qwen3

from lorakit.config import LoraConfig
from lorakit.errors import LorakitError
from lorakit.models.lora import attach_lora, trainable_parameters


def test_attach_trains_only_the_adapter_and_prints_no_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = attach_lora(tiny_qwen3(), LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    assert [str(w.message) for w in caught] == []
    trainable, total = trainable_parameters(model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert 0 < trainable < total


def test_unknown_target_module_names_the_field_and_real_layers():
    with pytest.raises(LorakitError, match=r"lora.target_modules: \['qkv'\] not found.*q_proj"):
        attach_lora(tiny_qwen3(), LoraConfig(target_modules=["q_proj", "qkv"]))


def _trained_adapter():
    """A LoRA model whose adapter changes the output: B is zero at init, so give it values."""
    import torch

    torch.manual_seed(0)
    model = attach_lora(
        tiny_qwen3(), LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"])
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def test_adapter_off_computes_what_peft_disable_adapter_computes():
    import torch

    from lorakit.models.lora import adapter_off

    model = _trained_adapter()
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        tuned = model(ids).logits
        with model.disable_adapter():
            base = model(ids).logits
        with adapter_off(model):
            off = model(ids).logits
            assert model._adapters_disabled
        again = model(ids).logits
    assert not torch.equal(tuned, base)  # the adapter (and the saved head) matter here
    assert torch.equal(off, base)
    assert torch.equal(again, tuned) and not model._adapters_disabled
    # requires_grad is left alone (peft's context switches it off and back on)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable


def test_adapter_off_restores_the_flags_when_the_block_raises():
    import torch

    from lorakit.models.lora import adapter_off

    model = _trained_adapter()
    ids = torch.tensor([[2, 4, 6]])
    with torch.no_grad():
        tuned = model(ids).logits
        with pytest.raises(RuntimeError, match="boom"), adapter_off(model):
            raise RuntimeError("boom")
        assert torch.equal(model(ids).logits, tuned)


def test_adapter_off_leaves_an_inference_models_adapter_frozen():
    # peft's context turns requires_grad back on for the active adapter on the way out; an adapter
    # loaded for inference (the eval, the server) stays frozen here
    from lorakit.models.lora import adapter_off

    model = _trained_adapter()
    model.requires_grad_(False)
    with adapter_off(model):
        pass
    assert not any(p.requires_grad for p in model.parameters())
