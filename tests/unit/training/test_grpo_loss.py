"""GRPO maths (lorakit.training.grpo_loss) on a small example worked out by hand."""

import math

import pytest
import torch

from lorakit.training import grpo_loss as G


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])  # two groups of 4
    adv, zero = G.group_advantages(rewards, 4, "group")
    std = math.sqrt(((0.5**2) * 4) / 3)  # group 1: mean 0.5, Bessel-corrected std
    expected = [0.5 / (std + 1e-4), -0.5 / (std + 1e-4), -0.5 / (std + 1e-4), 0.5 / (std + 1e-4), 0, 0, 0, 0]
    assert adv.tolist() == pytest.approx(expected, rel=1e-6)
    assert zero.tolist() == [False] * 4 + [True] * 4
    assert G.group_advantages(rewards, 4, "none")[0].tolist() == [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]
    batch_std = float(rewards.std())
    assert G.group_advantages(rewards, 4, "batch")[0].tolist() == pytest.approx(
        [
            0.5 / (batch_std + 1e-4),
            -0.5 / (batch_std + 1e-4),
            -0.5 / (batch_std + 1e-4),
            0.5 / (batch_std + 1e-4),
            0,
            0,
            0,
            0,
        ],
        rel=1e-6,
    )


def test_unscored_completions_are_left_out_and_get_zero():
    adv, _ = G.group_advantages(torch.tensor([1.0, float("nan"), 3.0, 2.0]), 4, "none")
    assert adv.tolist() == [-1.0, 0.0, 1.0, 0.0]


def test_clipped_objective_kl_and_normalisations_by_hand():
    # Two completions: 2 tokens and 1 token; advantages +1 and -1.
    logp = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    old = torch.tensor([-1.5, -2.0, -0.1])  # ratios e^0.5 (clipped high), 1, e^-0.4 (clipped low)
    ref = torch.tensor([-1.0, -1.0, -1.0])
    sample = torch.tensor([0, 0, 1])
    adv = torch.tensor([1.0, 1.0, -1.0])
    terms = G.token_terms(logp, old, ref, adv, beta=0.1, epsilon=0.2, kl_ratio_correction=False)
    r = [math.exp(0.5), 1.0, math.exp(-0.4)]
    kl = [math.exp(d) - d - 1 for d in (0.0, 1.0, -0.5)]
    expected = [-min(r[0], 1.2) + 0.1 * kl[0], -1.0 + 0.1 * kl[1], -min(-r[2], -0.8) + 0.1 * kl[2]]
    assert terms.loss.tolist() == pytest.approx(expected, rel=1e-6)
    grpo = G.summed_loss(terms.loss, sample, 2, "grpo") / G.denominator("grpo", 2, 3, 8)
    assert float(grpo.detach()) == pytest.approx(((expected[0] + expected[1]) / 2 + expected[2]) / 2, rel=1e-6)
    for kind, denom in (("bnpo", 3), ("dapo", 3), ("dr_grpo", 16)):
        value = G.summed_loss(terms.loss, sample, 2, kind) / G.denominator(kind, 2, 3, 8)
        assert float(value) == pytest.approx(sum(expected) / denom, rel=1e-6)
    corrected = G.token_terms(logp, old, ref, adv, beta=0.1, epsilon=0.2)  # TRL's default: KL times the ratio
    assert float(corrected.kl[0]) == pytest.approx(kl[0] * r[0]) and float(corrected.kl[2]) == pytest.approx(
        kl[2] * r[2]
    )
    stats = G.clip_stats(terms.ratio, adv, 0.2)
    assert stats["clip_ratio/high"] == pytest.approx(1 / 3) and stats["clip_ratio/low"] == pytest.approx(1 / 3)
    # Clipped tokens carry no policy gradient, only the KL's.
    grpo.backward()
    kl_grad = [0.1 * (1 - math.exp(d)) for d in (0.0, 1.0, -0.5)]
    assert logp.grad[0] == pytest.approx(kl_grad[0] / 4, abs=1e-7)
    assert logp.grad[2] == pytest.approx(kl_grad[2] / 2, abs=1e-7)


def test_epsilon_high_and_first_iteration_ratio_one():
    logp = torch.tensor([-1.0], requires_grad=True)
    terms = G.token_terms(
        logp, torch.tensor([-1.25]), None, torch.tensor([1.0]), beta=0.0, epsilon=0.2, epsilon_high=0.28
    )
    assert float(terms.loss) == pytest.approx(-math.exp(0.25) if math.exp(0.25) < 1.28 else -1.28)
    first = G.token_terms(logp, None, None, torch.tensor([2.0]), beta=0.0, epsilon=0.2)
    first.loss.sum().backward()
    assert float(first.loss) == -2.0 and float(logp.grad) == -2.0  # d/dlogp of -exp(0) * A
