"""ORPO, odds-ratio preference optimization (Hong et al., 2024): SFT on the chosen answer plus a term
that raises its odds over the rejected one's. Reference-free: no reference forward at all.

With each answer's log-probability averaged over its completion tokens, lc and lr, and odds
p / (1 - p) taken of exp(lc) and exp(lr):
    log_odds = (lc - lr) - (log(1 - exp(lc)) - log(1 - exp(lr)))
    loss     = NLL(chosen) - beta * mean_pairs(log sigmoid(log_odds))
where NLL is the token-mean cross entropy of the chosen sequences over the whole step, counted on the
prompt tokens AND the answer tokens (every token after the first, as TRL's ORPOTrainer does: its
`labels` are the whole chosen input). That is TRL 1.16's trl.experimental.orpo formula, checked against
its trainer in tests/conformance/test_preference_trl.py.

Layout: DPO's (objectives/dpo.py), samples [chosen_1, rejected_1, ...], except that the chosen sample
supervises its prompt too. That keeps a packed row from sharing the prompt between the two answers
(the shared prefix is, by definition, unsupervised), so ORPO computes each prompt twice.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from lorakit.data.template import IGNORE
from lorakit.training import batching
from lorakit.training.loss import sample_index
from lorakit.training.objectives.base import StepLoss
from lorakit.training.objectives.dpo import DPO

_LN_HALF = -math.log(2.0)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate at both ends (the two branches meet at -ln 2)."""
    return torch.where(x < _LN_HALF, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def odds_ratio(mean_chosen: torch.Tensor, mean_rejected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log sigmoid(log_odds), log_odds) per pair, from the per-token mean log-probs of each answer."""
    log_odds = (mean_chosen - mean_rejected) - (log1mexp(mean_chosen) - log1mexp(mean_rejected))
    return F.logsigmoid(log_odds), log_odds


def orpo_samples(unit: dict) -> list[dict]:
    """chosen (prompt and answer supervised: ORPO's NLL covers both), then rejected (answer only)."""
    prompt = unit["prompt"]
    chosen = prompt + unit["chosen"]
    return [
        {"input_ids": chosen, "labels": [IGNORE] + chosen[1:]},
        {"input_ids": prompt + unit["rejected"], "labels": [IGNORE] * len(prompt) + unit["rejected"]},
    ]


def orpo_batch(units: Sequence[dict], packing: bool, pad_id: int) -> dict:
    samples = [s for u in units for s in orpo_samples(u)]
    batch = batching.pack(samples, share_prefix=False) if packing else batching.pad(samples, pad_id)
    batch["pairs"] = len(units)
    # which supervised position (in token_logprobs order) is an answer token: the odds use only those
    answer = []
    for u in units:
        answer += [False] * (len(u["prompt"]) - 1) + [True] * len(u["chosen"]) + [True] * len(u["rejected"])
    batch["answer_mask"] = torch.tensor(answer)
    batch["nll_tokens"] = sum(len(u["prompt"]) + len(u["chosen"]) - 1 for u in units)
    return batch


class ORPO(DPO):
    name = "orpo"

    def __init__(self, cfg):
        super().__init__(cfg)
        self._step_nll_tokens = 0

    def micro_batches(self, units: Sequence[dict], pad_id: int, budget, world: int) -> list[dict]:
        t = self.cfg.train
        groups = [list(units[i : i + t.batch_size]) for i in range(0, len(units), t.batch_size)]
        if t.packing and budget:
            groups = [part for g in groups for part in _split(g, budget.tokens)]
        return [orpo_batch(g, t.packing, pad_id) for g in groups]

    def begin_step(self, micro: list[dict]) -> int:
        self._step_nll_tokens = sum(mb["nll_tokens"] for mb in micro)
        self._step_pairs = sum(mb["pairs"] for mb in micro)
        return self._step_pairs

    def loss(self, loss_of, batch: dict) -> StepLoss:
        beta = self.cfg.train.orpo_beta
        logp = loss_of(batch, "token_logprobs")
        answer = batch["answer_mask"].to(logp.device)
        index = sample_index(batch)
        n = 2 * batch["pairs"]
        sums = torch.zeros(n, dtype=logp.dtype, device=logp.device).index_add(0, index[answer], logp[answer])
        counts = torch.bincount(index[answer], minlength=n).to(logp.dtype)
        means = sums / counts.clamp(min=1)
        chosen, rejected = means[0::2], means[1::2]
        ratio, log_odds = odds_ratio(chosen, rejected)
        # NLL of every chosen token (prompt and answer): the chosen samples' positions
        nll_sum = -logp[index % 2 == 0].sum()
        # the loop divides by the step's pairs: the NLL's token mean over the step is rescaled to that
        total = nll_sum * (self._step_pairs / max(1, self._step_nll_tokens)) - beta * ratio.sum()
        with torch.no_grad():
            r_c, r_r = beta * chosen.detach(), beta * rejected.detach()
            metrics = {
                "rewards/chosen": r_c.sum(),
                "rewards/rejected": r_r.sum(),
                "accuracy": (r_c > r_r).float().sum(),
                "margin": (r_c - r_r).sum(),
                "logps/chosen": chosen.detach().sum(),
                "logps/rejected": rejected.detach().sum(),
                "log_odds_ratio": ratio.detach().sum(),
                "log_odds_chosen": log_odds.detach().sum(),
            }
        return StepLoss(total, metrics)

    def begin_run(self, setup) -> None:
        """Reference-free: nothing to precompute."""


def _split(units: list[dict], budget: int) -> list[list[dict]]:
    """Pairs in groups of at most `budget` tokens (a pair is never split)."""
    groups: list[list[dict]] = []
    size = 0
    for u in units:
        n = 2 * len(u["prompt"]) + len(u["chosen"]) + len(u["rejected"])
        if groups and size + n <= budget:
            groups[-1].append(u)
            size += n
        else:
            groups.append([u])
            size = n
    return groups
