"""The DPO objective's layouts are invisible to its loss: packed equals padded, a shared prompt equals
none, pairs per forward do not matter (1e-5); resume refuses a changed train.method."""

import sys
from pathlib import Path

import pytest
import torch

from lorakit.config import LoraConfig, RunConfig
from lorakit.errors import LorakitError
from lorakit.models.lora import attach_lora
from lorakit.training import resume
from lorakit.training.attention import use_packed_attention
from lorakit.training.loss import LossModule
from lorakit.training.objectives import REGISTRY, objective_for
from lorakit.training.objectives.dpo import DPO

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "conformance"))
from families import BY_NAME, build  # noqa: E402


def ids(seed, n):
    return torch.randint(3, 300, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


SYSTEM = ids(0, 5)  # a prompt opening every pair shares
PAIRS = [
    {"prompt": SYSTEM + ids(i, 4 + i), "chosen": ids(10 + i, 3 + 2 * i), "rejected": ids(20 + i, 6 - i)}
    for i in range(3)
]


def model(packed=True, seed=0, calls="auto"):
    m = attach_lora(build(BY_NAME["qwen3"]), LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
    if packed:
        use_packed_attention(m, calls)
    torch.manual_seed(seed)
    for n, p in m.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.2)
    return m.train()


def step(m, **train):
    cfg = RunConfig(train=dict(method="dpo", dpo_loss="sigmoid", rpo_alpha=0.5, **train))
    objective = objective_for(cfg)
    micro = objective.micro_batches(PAIRS, 0, None, 1)
    n = objective.begin_step(micro)
    m.zero_grad()
    total = sum(objective.loss(LossModule(m), mb).loss for mb in micro) / n
    total.backward()
    return total.detach(), {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}


def assert_close(a, b):
    assert torch.allclose(a[0], b[0], rtol=1e-5), (a[0], b[0])
    for k in a[1]:
        assert torch.allclose(a[1][k], b[1][k], rtol=1e-5, atol=1e-5 * float(b[1][k].abs().max())), k


def test_layouts_give_the_same_loss_and_gradients():
    reference = step(model(packed=False), packing=False, batch_size=3)
    assert_close(step(model(), packing=True, share_prefix=True, batch_size=1), reference)  # whole prompt shared
    assert_close(step(model(), packing=True, share_prefix=True, batch_size=3), reference)  # each prompt once
    assert_close(step(model(calls="whole_row"), packing=True, share_prefix=True, batch_size=3), reference)  # GPU's
    assert_close(step(model(), packing=True, share_prefix=False, batch_size=2), reference)


def test_a_pair_shares_its_whole_prompt_in_one_row():
    objective = DPO(RunConfig(train=dict(method="dpo", batch_size=1)))
    row = objective.micro_batches(PAIRS[:1], 0, None, 1)[0]
    p = PAIRS[0]
    assert row["shared_prefix"] == len(p["prompt"]) - 1  # the last prompt token predicts each answer's first
    assert row["input_ids"].shape[1] == len(p["prompt"]) + 1 + len(p["chosen"]) + len(p["rejected"])
    assert row["pairs"] == 1


def test_pairs_in_one_forward_store_each_prompt_once():
    """Three pairs in a row: the opening they all share once, each pair's further prompt once (less its
    last token, which each answer keeps to predict its first token from), then each answer."""
    from lorakit.training import batching

    row = DPO(RunConfig(train=dict(method="dpo", batch_size=3))).micro_batches(PAIRS, 0, None, 1)[0]
    everyone = [{"input_ids": p["prompt"] + p[k], "labels": [-100] * len(p["prompt"]) + p[k]}
                for p in PAIRS for k in ("chosen", "rejected")]  # fmt: skip
    opening = batching.shared_prefix_length(everyone)
    assert opening >= len(SYSTEM)
    own_prompts = sum(len(p["prompt"]) - 1 - opening for p in PAIRS)
    answers = sum(2 + len(p["chosen"]) + len(p["rejected"]) for p in PAIRS)
    assert row["input_ids"].shape[1] == opening + own_prompts + answers
    assert len(row["samples"]) == 6 and row["pairs"] == 3


def test_the_registry_builds_each_method():
    assert set(REGISTRY) >= {"sft", "dpo"}
    assert objective_for(RunConfig()).name == "sft"
    assert objective_for(RunConfig(train={"method": "dpo"})).name == "dpo"


def test_resume_refuses_a_changed_method(tmp_path):
    ckpt = tmp_path / "checkpoint-2"
    ckpt.mkdir()
    before = {"config": RunConfig().model_dump(mode="json"), "data": "k", "base_model": {}}
    now = {"config": RunConfig(train={"method": "dpo"}).model_dump(mode="json"), "data": "k", "base_model": {}}
    with pytest.raises(LorakitError, match='train.method: "sft" -> "dpo"'):
        resume.check_resume(ckpt, {"trained_with": before, "step": 2}, now, False, print)


def test_dpo_settings_without_dpo_are_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="train.rpo_alpha: a preference-tuning setting"):
        RunConfig(train={"rpo_alpha": 0.5})
    with pytest.raises(ValidationError, match="train.label_smoothing: only the robust"):
        RunConfig(train={"method": "dpo", "label_smoothing": 0.1})
