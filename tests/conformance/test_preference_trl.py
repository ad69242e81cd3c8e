"""ORPO, SimPO and KTO equal TRL 1.16's own trainers (trl.experimental.orpo, trl.experimental.cpo with
loss_type="simpo", trl.KTOTrainer with peft and the reference = adapter off): loss, metrics and LoRA
gradients, fp32, rtol 1e-5, on Qwen3 and Mistral (a sliding window shorter than the sequences).

TRL tokenizes the records, collates them and computes its loss with its own code (trl_preference.py);
lorakit's objective gets the very tokens of that batch as its units, in packed rows (and, once, in the
padded layout of models without a packed path)."""

import pytest
import torch
from families import BY_NAME, build
from test_matrix import word_tokenizer
from trl_preference import (
    lora_grads,
    pair_units,
    trl_kto,
    trl_orpo,
    trl_simpo,
    unpaired_units,
    word_pairs,
    word_unpaired,
)

from lorakit.config import RunConfig
from lorakit.training.attention import use_packed_attention
from lorakit.training.loss import LossModule

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
FAMILIES = ["qwen3", "mistral"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return word_tokenizer(tmp_path_factory.mktemp("words"))


def peft_model(family: str, adapter: dict | None = None):
    """The family's tiny model with LoRA: nonzero B (seeded), or the given adapter weights."""
    from lorakit.config import LoraConfig
    from lorakit.models.lora import attach_lora

    model = attach_lora(build(BY_NAME[family]), LoraConfig(r=4, alpha=8, target_modules=TARGETS))
    torch.manual_seed(5)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    if adapter is not None:
        model.load_state_dict(adapter, strict=False)
    return model


def adapter_of(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def fitted_to(model, tokenizer, rows: list[dict], steps: int = 8):
    """`model` after a few SGD steps on the rows' completions: a random adapter lowers every log-prob, so
    KTO's KL estimate would be clamped to 0; one that has learnt the answers raises them, mismatched too."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    ids = [tokenizer(r["prompt"] + r["completion"])["input_ids"] for r in rows]
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        sum(model(input_ids=torch.tensor([x]), labels=torch.tensor([x])).loss for x in ids).backward()
        opt.step()
    opt.zero_grad()
    return model


def lorakit_run(objective_cls, family: str, units: list, packing: bool = True, adapter: dict | None = None, **train):
    """lorakit's step loss over `units` as one step (the loop's division by the step's denominator)."""
    model = peft_model(family, adapter)
    if packing:
        use_packed_attention(model)
    model.train()
    cfg = RunConfig(
        train=dict(method=objective_cls.name, batch_size=len(units), packing=packing, share_prefix=packing, **train),
        data=dict(max_length=128),
    )
    objective = objective_cls(cfg)
    micro = objective.micro_batches(units, 0, None, 1)
    n = objective.begin_step(micro)
    loss_of = LossModule(model)
    outs = [objective.loss(loss_of, mb) for mb in micro]
    total = sum(o.loss for o in outs) / n
    total.backward()
    metrics = {k: float(sum(o.metrics[k] for o in outs if k in o.metrics)) / n for k in outs[0].metrics}
    return total.detach(), metrics, lora_grads(model)


def assert_same(got, expected_loss, expected_grads):
    loss, _, grads = got
    torch.testing.assert_close(loss, expected_loss.to(loss.dtype), rtol=1e-5, atol=0)
    assert grads.keys() == expected_grads.keys()
    for name, g in grads.items():
        # the matrix's rule (test_matrix.assert_grads_equal): rtol 1e-5, floor at 1e-5 of the largest entry
        scale = float(expected_grads[name].abs().max())
        torch.testing.assert_close(
            g, expected_grads[name], rtol=1e-5, atol=1e-5 * scale, msg=lambda m, name=name: f"{name}: {m}"
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_orpo_equals_trl(family, tokenizer):
    from lorakit.training.objectives.orpo import ORPO

    model = peft_model(family)
    loss, metrics, batch = trl_orpo(model, tokenizer, word_pairs(4, seed=1), beta=0.25)
    got = lorakit_run(ORPO, family, pair_units(batch), orpo_beta=0.25)
    assert_same(got, loss, lora_grads(model))
    for ours, theirs in [
        ("rewards/chosen", "rewards/chosen"),
        ("rewards/rejected", "rewards/rejected"),
        ("accuracy", "rewards/accuracies"),
        ("log_odds_ratio", "log_odds_ratio"),
        ("log_odds_chosen", "log_odds_chosen"),
    ]:
        # log-odds near 0 are differences of log-probs near -6: fp32 rounds those at ~1e-6 absolute
        assert got[1][ours] == pytest.approx(metrics[theirs], rel=1e-5, abs=2e-6), ours
    if family == "qwen3":  # the padded layout gives the same
        assert_same(
            lorakit_run(ORPO, family, pair_units(batch), packing=False, orpo_beta=0.25), loss, lora_grads(model)
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_simpo_equals_trl(family, tokenizer):
    from lorakit.training.objectives.simpo import SimPO

    model = peft_model(family)
    loss, metrics, batch = trl_simpo(model, tokenizer, word_pairs(4, seed=2), beta=2.0, gamma=0.7)
    got = lorakit_run(SimPO, family, pair_units(batch), simpo_beta=2.0, simpo_gamma=0.7)
    assert_same(got, loss, lora_grads(model))
    # beta times a difference of log-probs near -6: fp32 rounds it at ~1e-6 absolute
    assert got[1]["margin"] == pytest.approx(metrics["rewards/margins"], rel=1e-5, abs=5e-6)
    if family == "qwen3":
        assert_same(
            lorakit_run(SimPO, family, pair_units(batch), packing=False, simpo_beta=2.0, simpo_gamma=0.7),
            loss,
            lora_grads(model),
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_kto_equals_trl(family, tokenizer):
    from lorakit.training.objectives.kto import KTO

    rows = word_unpaired(6, seed=3)
    model = fitted_to(peft_model(family), tokenizer, rows)
    adapter = adapter_of(model)
    weights = dict(desirable_weight=1.0, undesirable_weight=1.5)
    loss, metrics, batch = trl_kto(model, tokenizer, rows, beta=0.5, **weights)
    units = unpaired_units(batch)
    assert {u["label"] for u in units} == {True, False}
    got = lorakit_run(
        KTO, family, units, adapter=adapter, kto_beta=0.5, kto_desirable_weight=1.0, kto_undesirable_weight=1.5
    )
    assert_same(got, loss, lora_grads(model))
    assert metrics["kl"] > 0  # the KL term is live in this comparison, not clamped away
    assert got[1]["kl"] == pytest.approx(metrics["kl"], rel=1e-5)
    if family == "qwen3":
        assert_same(
            lorakit_run(
                KTO,
                family,
                units,
                packing=False,
                adapter=adapter,
                kto_beta=0.5,
                kto_desirable_weight=1.0,
                kto_undesirable_weight=1.5,
            ),
            loss,
            lora_grads(model),
        )
