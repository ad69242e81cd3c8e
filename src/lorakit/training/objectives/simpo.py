"""SimPO, simple preference optimization (Meng et al., 2024): DPO's sigmoid loss on length-normalised
log-probabilities, with a target margin and no reference model.

With lc and lr each answer's log-probability averaged over its completion tokens:
    loss = mean_pairs(-log sigmoid(beta * (lc - lr) - gamma))
(beta = train.simpo_beta, gamma = train.simpo_gamma). That is TRL 1.16's
trl.experimental.cpo CPOTrainer with loss_type="simpo", label_smoothing 0 and cpo_alpha 0 (SimPO
proper; TRL's default cpo_alpha 1 adds CPO's NLL term), checked against it in
tests/conformance/test_preference_trl.py. Rewards are beta * lc and beta * lr.

Layout and data: DPO's (objectives/dpo.py): a pair's two answers share its prompt in one packed row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lorakit.training.objectives.base import StepLoss
from lorakit.training.objectives.dpo import DPO, sequence_logps


def simpo_losses(mean_chosen: torch.Tensor, mean_rejected: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """Each pair's SimPO loss from the per-token mean log-probs of its answers."""
    return -F.logsigmoid(beta * (mean_chosen - mean_rejected) - gamma)


class SimPO(DPO):
    name = "simpo"

    def loss(self, loss_of, batch: dict) -> StepLoss:
        t = self.cfg.train
        sums, counts = sequence_logps(loss_of(batch, "token_logprobs"), batch)
        means = sums / counts.clamp(min=1)
        chosen, rejected = means[0::2], means[1::2]
        losses = simpo_losses(chosen, rejected, t.simpo_beta, t.simpo_gamma)
        with torch.no_grad():
            r_c, r_r = t.simpo_beta * chosen.detach(), t.simpo_beta * rejected.detach()
            metrics = {
                "rewards/chosen": r_c.sum(),
                "rewards/rejected": r_r.sum(),
                "accuracy": (r_c > r_r).float().sum(),
                "margin": (r_c - r_r).sum(),
                "logps/chosen": chosen.detach().sum(),
                "logps/rejected": rejected.detach().sum(),
            }
        return StepLoss(losses.sum(), metrics)

    def begin_run(self, setup) -> None:
        """Reference-free: nothing to precompute."""
