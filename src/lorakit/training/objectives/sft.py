"""Supervised fine-tuning: next-token cross entropy on the answer tokens, summed and divided by the
supervised tokens of the whole optimizer step."""

from __future__ import annotations

from typing import Sequence

import torch

from lorakit.training import batching
from lorakit.training.objectives.base import Objective, StepLoss


class SFT(Objective):
    name = "sft"
    data_kind = "conversations"

    def prepare(self, data_cfg, tokenizer, cache_dir):
        from lorakit.data import prepare_splits

        return prepare_splits(data_cfg, tokenizer, cache_dir=cache_dir)

    def micro_batches(self, units: Sequence[dict], pad_id: int, budget, world: int) -> list[dict]:
        t = self.cfg.train
        return batching.micro_batches(units, t.batch_size, t.packing, pad_id, t.share_prefix, budget, world)

    def begin_step(self, micro: list[dict]) -> int:
        return sum(batching.supervised_tokens(mb) for mb in micro)

    def loss(self, loss_of, batch: dict) -> StepLoss:
        return StepLoss(loss_of(batch), {})

    @torch.no_grad()
    def evaluate(self, loss_of, units, pad_id, device, autocast, budget) -> dict:
        from lorakit.training.loss import evaluate_loss, perplexity

        t = self.cfg.train
        value = evaluate_loss(loss_of, units, t.batch_size, t.packing, pad_id, device, autocast, t.share_prefix, budget)
        return {"eval_loss": value, "eval_ppl": perplexity(value)}
