"""What an objective is: how a step's units become forwards, the loss, its metrics.

The training loop (training/loop.py) is one loop for every method. It asks the objective for the
step's micro-batches, the number the step's summed loss is divided by, and each micro-batch's summed
loss with its metric sums; it owns everything else (accumulation, checkpoints, exact resume, tracking,
eval steps, early stopping, data parallel, FSDP). Adding a method is one module here and one line in
objectives/__init__.py's REGISTRY.

A *unit* is what the data stage yields for the method and what one "sample" of `train.batch_size`
counts: an SFT sample ({"input_ids", "labels"}), a preference pair ({"prompt", "chosen", "rejected"}
token lists), later a prompt group (GRPO).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch


@dataclass
class StepLoss:
    """One micro-batch's contribution: `loss` summed (the loop divides by the step's denominator) and
    `metrics`, summed the same way (the loop logs metric_sum / denominator)."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]


class Objective:
    """The interface; SFT (objectives/sft.py) is the smallest complete example."""

    name: str = ""
    data_kind: str = "conversations"  # what the data stage reads: conversations | pairs | unpaired | prompts
    unit: str = "samples"  # what one unit is called in messages ("pairs", ...)
    # model rows (samples) one unit lays out: a preference pair is two, chosen and rejected. The CPU cap
    # on a forward's tokens (training/plan.py: pack_budget) counts rows, so a pair gets two rows' room.
    rows_per_unit: int = 1

    def __init__(self, cfg):
        self.cfg = cfg  # the RunConfig as the steps run it

    # -- data -------------------------------------------------------------------------------------------
    def prepare(self, data_cfg, tokenizer, cache_dir: Path | None):
        """The tokenized train/eval units (a lorakit.data.PreparedData)."""
        raise NotImplementedError

    def unit_tokens(self, unit: dict) -> int:
        """Tokens one unit puts through the model (the plan's memory estimate sizes forwards with it)."""
        return len(unit["input_ids"])

    def unit_supervised(self, unit: dict) -> int:
        """Tokens of one unit that carry loss (the plan reports them)."""
        return sum(1 for x in unit["labels"] if x != -100)

    # -- a step ----------------------------------------------------------------------------------------
    def micro_batches(self, units: Sequence[dict], pad_id: int, budget, world: int) -> list[dict]:
        """One optimizer step's units as model inputs (batching.pack or batching.pad rows)."""
        raise NotImplementedError

    def begin_step(self, micro: list[dict]) -> int:
        """Called once per step before its forwards, with all of the step's micro-batches (every rank's):
        returns what the summed loss is divided by, so 1 x 8 and 8 x 1 give the same gradient."""
        raise NotImplementedError

    def loss(self, loss_of, batch: dict) -> StepLoss:
        """Summed loss and metric sums of one micro-batch; `loss_of` is the LossModule (FSDP's root)."""
        raise NotImplementedError

    def begin_run(self, setup) -> None:
        """Once, after the model is built and a checkpoint restored, before the first step (DPO
        precomputes its reference log-probs here)."""

    def rollout(self, setup, units: list[dict]) -> list[dict]:
        """Before a step's forwards: GRPO generates its completions here. Others: the units as they are."""
        return units

    # -- held-out --------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, loss_of, units: Sequence[dict], pad_id: int, device: str, autocast, budget) -> dict:
        """Held-out figures; must hold "eval_loss" (the loop keeps the best checkpoint by it)."""
        raise NotImplementedError

    # -- exact resume ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What exact resume needs besides the model and optimizer (a sampler's RNG, ...)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
