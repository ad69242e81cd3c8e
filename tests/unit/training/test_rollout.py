"""GRPO rollouts through the engine on the training PeftModel (lorakit.training.rollout)."""

import pytest
import torch

from lorakit import models
from lorakit.config import LoraConfig
from lorakit.inference.engine import Engine, SamplingParams
from lorakit.models.lora import attach_lora
from lorakit.training.attention import NAME as PACKED
from lorakit.training.attention import use_packed_attention
from lorakit.training.rollout import Rollout, RolloutSettings

BASE = "qwen3-tiny-random"
PROMPTS = [[{"role": "user", "content": "What is 2 + 3?"}], [{"role": "user", "content": "Name a colour."}]]


@pytest.fixture(scope="module")
def peft_model():
    path = models.resolve_model(BASE)
    model = attach_lora(models.load_model(path, dtype="float32"), LoraConfig(r=4, alpha=8))
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # a non-zero adapter, so "current adapter" is visible in the samples
            torch.nn.init.normal_(p, std=0.5)
    return model, models.load_tokenizer(path)


def test_groups_seeds_eos_and_resume(peft_model):
    model, tok = peft_model
    model.train()
    settings = RolloutSettings(num_generations=3, max_completion_length=6, temperature=1.0)
    rollout = Rollout(model, tok, settings, seed=7)
    assert model.training  # wrapping the model did not leave it in eval mode
    ids = [rollout.prompt_ids(p) for p in PROMPTS]
    saved = rollout.state_dict()
    first = rollout.generate(ids)
    assert model.training
    assert [c.group for c in first] == [0, 0, 0, 1, 1, 1]
    assert all(c.prompt_ids == ids[c.group] for c in first)
    # each completion has its own seed: a group is not three copies of one sample
    assert len({tuple(c.completion_ids) for c in first[:3]}) > 1
    for c in first:
        stopped = c.completion_ids[-1] in rollout.engine.eos_ids
        assert c.truncated == (not stopped) and len(c.completion_ids) <= 6
        assert c.text == tok.decode(c.completion_ids, skip_special_tokens=True)
    # the sampling RNG is the whole state: restored, the same completions come again
    second = rollout.generate(ids)
    assert [c.completion_ids for c in second] != [c.completion_ids for c in first]
    rollout.load_state_dict(saved)
    assert [c.completion_ids for c in rollout.generate(ids)] == [c.completion_ids for c in first]


def test_samples_come_from_the_current_adapter_and_packed_attention_is_restored(peft_model):
    model, tok = peft_model
    greedy = RolloutSettings(num_generations=1, max_completion_length=5, temperature=0.0)
    rollout = Rollout(model, tok, greedy, seed=0)
    ids = [rollout.prompt_ids(PROMPTS[0])]
    use_packed_attention(model.get_base_model())
    model.train()
    with_adapter = rollout.generate(ids)[0]
    assert model.get_base_model().config._attn_implementation == PACKED and model.training
    model.get_base_model().set_attn_implementation("sdpa")
    reference = Engine(model, tok)  # the plain engine on the same object: the same greedy text
    assert with_adapter.text == reference.generate(ids[0], SamplingParams(temperature=0, max_new_tokens=5)).text
    with model.disable_adapter():
        assert rollout.generate(ids)[0].completion_ids != with_adapter.completion_ids
