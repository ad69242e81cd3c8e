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
