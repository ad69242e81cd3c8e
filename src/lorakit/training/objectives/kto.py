"""KTO, Kahneman-Tversky optimization (Ethayarajh et al., 2024): preference tuning from answers labelled
desirable or undesirable one by one, no pairs needed.

A unit is {"prompt", "completion", "label"} (token ids, label True = desirable). With r = logp - ref,
each answer's summed completion log-probability under the tuned model minus under the reference (the
same model with the adapter switched off, under no_grad):
    desirable:    1 - sigmoid(beta * (r - z))
    undesirable:  1 - sigmoid(beta * (z - r))
    loss = mean over the step's answers of (w_d or w_u) * that   (train.kto_desirable_weight / _undesirable)
z is the KL estimate: within each micro-batch of train.batch_size answers, every prompt is paired with
the previous answer's completion (the first with the last's), and z = max(0, mean(logp - ref)) of those
mismatched sequences, computed under no_grad (no gradient flows through z). That is TRL 1.16's
KTOTrainer (loss_type "kto", its rotation of completions by one within a per-device batch), checked
against it in tests/conformance/test_preference_trl.py. A data-parallel run estimates z per rank (TRL
averages it across ranks).

Data: the unpaired form (`prompt`, `completion`, boolean `label`), or pairs, which are unpaired as TRL
does (the chosen answer desirable, the rejected one undesirable). Each answer is rendered with the chat
template after its prompt, the prompt kept whole and the answer cut to fit data.max_length; an answer
whose prompt fills max_length is dropped (TRL's rules).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import torch

from lorakit.data.template import IGNORE
from lorakit.models.lora import adapter_off
from lorakit.training import batching
from lorakit.training.loss import sample_index
from lorakit.training.objectives.base import Objective, StepLoss


def mismatched(units: Sequence[dict]) -> list[dict]:
    """The KL sequences of a group: prompt i with completion i-1, the first prompt with the last's."""
    return [{"prompt": u["prompt"], "completion": units[i - 1]["completion"]} for i, u in enumerate(units)]


def kto_losses(
    ratio: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor,
    beta: float,
    w_desirable: float,
    w_undesirable: float,
) -> torch.Tensor:
    """Each answer's weighted KTO loss from its log-ratio r, its label and the KL estimate z."""
    good = w_desirable * (1 - torch.sigmoid(beta * (ratio - kl)))
    bad = w_undesirable * (1 - torch.sigmoid(beta * (kl - ratio)))
    return torch.where(desirable, good, bad)


def _samples(units: Sequence[dict], max_length: int) -> list[dict]:
    out = []
    for u in units:
        ids = (u["prompt"] + u["completion"])[:max_length]
        out.append({"input_ids": ids, "labels": ([IGNORE] * len(u["prompt"]) + u["completion"])[:max_length]})
    return out


def _rows(samples: list[dict], packing: bool, share_prefix: bool, pad_id: int) -> dict:
    return batching.pack(samples, share_prefix) if packing else batching.pad(samples, pad_id)


def sequence_sums(loss_of, batch: dict, n: int) -> torch.Tensor:
    """Per-sample sums of the completion tokens' log-probs, shape (n,)."""
    logp = loss_of(batch, "token_logprobs")
    return torch.zeros(n, dtype=logp.dtype, device=logp.device).index_add(0, sample_index(batch), logp)


class KTO(Objective):
    name = "kto"
    data_kind = "unpaired"
    unit = "answers"

    def prepare(self, data_cfg, tokenizer, cache_dir):
        from lorakit.training.objectives.kto_data import prepare_unpaired

        return prepare_unpaired(data_cfg, tokenizer)

    def unit_tokens(self, unit: dict) -> int:
        return 2 * (len(unit["prompt"]) + len(unit["completion"]))  # the answer and its KL sequence

    def unit_supervised(self, unit: dict) -> int:
        return len(unit["completion"])

    def micro_batches(self, units: Sequence[dict], pad_id: int, budget, world: int) -> list[dict]:
        # one micro-batch = one KL group of train.batch_size answers (never split: z is a mean over it)
        t, m = self.cfg.train, self.cfg.data.max_length
        out = []
        for i in range(0, len(units), t.batch_size):
            group = list(units[i : i + t.batch_size])
            batch = _rows(_samples(group, m), t.packing, t.share_prefix, pad_id)
            batch["answers"] = len(group)
            batch["desirable"] = torch.tensor([bool(u["label"]) for u in group])
            batch["kl_batch"] = _rows(_samples(mismatched(group), m), t.packing, t.share_prefix, pad_id)
            out.append(batch)
        return out

    def begin_step(self, micro: list[dict]) -> int:
        return sum(mb["answers"] for mb in micro)

    def loss(self, loss_of, batch: dict) -> StepLoss:
        t = self.cfg.train
        n = batch["answers"]
        device = batch["input_ids"].device
        kl_batch = batching.to_device(batch["kl_batch"], device)
        logps = sequence_sums(loss_of, batch, n)
        with torch.no_grad():
            kl_policy = sequence_sums(loss_of, kl_batch, n)
            with adapter_off(loss_of.model):
                ref = sequence_sums(loss_of, batch, n)
                kl_ref = sequence_sums(loss_of, kl_batch, n)
            kl = (kl_policy - kl_ref).mean().clamp(min=0)
        desirable = batch["desirable"].to(logps.device)
        ratio = logps - ref
        losses = kto_losses(ratio, desirable, kl, t.kto_beta, t.kto_desirable_weight, t.kto_undesirable_weight)
        with torch.no_grad():
            rewards = t.kto_beta * ratio.detach()
            metrics = {"kl": kl * n}  # summed so that the loop's division by answers gives their mean
            for name, mask in (("chosen", desirable), ("rejected", ~desirable)):
                k = int(mask.sum())
                if k:  # class means, weighted by the micro-batch's share of the step
                    metrics[f"rewards/{name}"] = rewards[mask].mean() * n
                    metrics[f"logps/{name}"] = logps.detach()[mask].mean() * n
        return StepLoss(losses.sum(), metrics)

    @torch.no_grad()
    def evaluate(self, loss_of, units, pad_id, device, autocast, budget) -> dict:
        """Held-out KTO loss (the training formula over the held-out answers) and its metrics."""
        was_training = loss_of.training
        loss_of.eval()
        micro = self.micro_batches(units, pad_id, budget, 1)
        n = self.begin_step(micro)
        total, sums = 0.0, defaultdict(float)
        for mb in micro:
            mb = batching.to_device(mb, device)
            with autocast:
                out = self.loss(loss_of, mb)
            total += float(out.loss)
            for k, v in out.metrics.items():
                sums[k] += float(v)
        loss_of.train(was_training)
        return {"eval_loss": total / max(1, n), **{f"eval_{k}": v / max(1, n) for k, v in sums.items()}}
