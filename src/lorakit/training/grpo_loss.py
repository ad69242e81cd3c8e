"""GRPO's maths as plain tensor functions: group advantages, the clipped per-token objective with its
k3 KL term, and the loss normalisations TRL names. No model, no batching: the objective feeds these
the per-token log-probabilities of the completion tokens, flattened, with `sample` saying which
completion each token belongs to.

The formulas follow trl.GRPOTrainer 1.16 (`_generate_and_score_completions` for the advantages,
`_compute_loss` for the rest); tests/unit/training/test_grpo_loss.py checks them by hand and against
TRL's own code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")
STD_EPS = 1e-4  # added to the std before dividing, as TRL does


def group_advantages(
    rewards: torch.Tensor, num_generations: int, scale: str = "group"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, std_is_zero) for rewards laid out as consecutive groups of `num_generations`.

    advantage = reward - its group's mean, divided by (std + 1e-4) with scale "group" (the group's std)
    or "batch" (the whole batch's std); "none" leaves it unscaled (Dr. GRPO). NaN rewards (no reward
    function scored the completion) are left out of the mean and std and get advantage 0.
    `std_is_zero` marks completions whose group (or batch) had one reward for all: no signal.
    """
    if scale not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {SCALE_REWARDS}, not {scale!r}")
    if rewards.numel() % num_generations:
        raise ValueError(f"{rewards.numel()} rewards do not form groups of {num_generations}")
    grouped = rewards.view(-1, num_generations)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(num_generations)
    if scale == "batch":
        std = _nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
    elif num_generations > 1:
        std = _nanstd(grouped, dim=1).repeat_interleave(num_generations)
    else:
        std = torch.zeros_like(rewards)
    advantages = rewards - mean
    if scale != "none":
        advantages = advantages / (std + STD_EPS)
    return torch.nan_to_num(advantages, nan=0.0), torch.isclose(std, torch.zeros_like(std))


@dataclass
class TokenTerms:
    """Per-token pieces of the GRPO objective (all shaped like the log-probs)."""

    loss: torch.Tensor  # the clipped surrogate, plus beta * KL
    ratio: torch.Tensor  # pi / pi_old, for the clip statistics
    kl: torch.Tensor | None  # k3 estimate of KL(pi || ref); None when beta is 0


def token_terms(
    logp: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    beta: float,
    epsilon: float,
    epsilon_high: float | None = None,
    kl_ratio_correction: bool = True,
) -> TokenTerms:
    """-min(r * A, clip(r, 1 - eps, 1 + eps_high) * A) + beta * KL per token, with r = exp(logp - old_logp).

    `advantages` holds one value per token (its completion's advantage). Without `old_logp` (one
    iteration per generation batch) the old policy is the current one, detached: r = 1 in value, its
    gradient the plain policy gradient. KL is k3: exp(ref - logp) - (ref - logp) - 1, times the ratio
    r when `kl_ratio_correction` (TRL's use_bias_correction_kl, on by default: the completions were
    sampled from the old policy, so the KL estimate is importance-weighted too).
    """
    old_logp = logp.detach() if old_logp is None else old_logp
    high = epsilon if epsilon_high is None else epsilon_high
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + high)
    loss = -torch.min(ratio * advantages, clipped * advantages)
    kl = None
    if beta != 0.0:
        if ref_logp is None:
            raise ValueError("beta > 0 needs the reference log-probabilities")
        delta = ref_logp - logp
        kl = torch.exp(delta) - delta - 1
        if kl_ratio_correction:
            kl = kl * ratio
        loss = loss + beta * kl
    return TokenTerms(loss, ratio, kl)


def summed_loss(token_loss: torch.Tensor, sample: torch.Tensor, n_samples: int, loss_type: str) -> torch.Tensor:
    """The numerator of the loss for these tokens; divide by `denominator(...)` of the step.

    grpo sums each completion's token mean (so the step's loss is the mean over completions); the
    token-level types (bnpo, dr_grpo, dapo) sum the tokens and differ only in what they divide by.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, not {loss_type!r}")
    if loss_type != "grpo":
        return token_loss.sum()
    sums = token_loss.new_zeros(n_samples).index_add(0, sample, token_loss)
    lengths = torch.bincount(sample, minlength=n_samples).clamp(min=1).to(token_loss.dtype)
    return (sums / lengths).sum()


def denominator(loss_type: str, completions: int, tokens: int, max_completion_length: int) -> float:
    """What the summed loss of `completions` completions holding `tokens` completion tokens is divided by.

    grpo: completions (mean of per-completion means); bnpo and dapo: completion tokens; dr_grpo:
    completions x max_completion_length (a constant per completion, Dr. GRPO's fix for length bias).
    In TRL, bnpo counts the tokens of one micro-batch and dapo those of the whole generation batch: the
    caller passes the matching `tokens`.
    """
    if loss_type == "grpo":
        return float(max(completions, 1))
    if loss_type == "dr_grpo":
        return float(completions * max_completion_length)
    if loss_type in ("bnpo", "dapo"):
        return float(max(tokens, 1))
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, not {loss_type!r}")


def clip_stats(
    ratio: torch.Tensor, advantages: torch.Tensor, epsilon: float, epsilon_high: float | None = None
) -> dict[str, float]:
    """Share of tokens whose ratio was clipped (low: below 1 - eps with A < 0; high: above 1 + eps_high, A > 0)."""
    high = epsilon if epsilon_high is None else epsilon_high
    low_clip = (ratio < 1 - epsilon) & (advantages < 0)
    high_clip = (ratio > 1 + high) & (advantages > 0)
    n = max(ratio.numel(), 1)
    return {
        "clip_ratio/low": float(low_clip.sum()) / n,
        "clip_ratio/high": float(high_clip.sum()) / n,
        "clip_ratio/region": float((low_clip | high_clip).sum()) / n,
    }


def _nanstd(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Std over non-NaN values with Bessel's correction (NaN below two values), as TRL's nanstd."""
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    var = torch.nanmean((x - mean) ** 2, dim=dim, keepdim=True)
    count = (~torch.isnan(x)).sum(dim=dim, keepdim=True)
    var = var * torch.where(count > 1, count / (count - 1), torch.full_like(var, float("nan")))
    std = var.sqrt()
    return std.squeeze(dim) if dim is not None else std.reshape(())
