"""Direct Preference Optimization (Rafailov et al., 2023) and the loss types people compare with it.

A unit is a pair {"prompt", "chosen", "rejected"} (token ids; lorakit.data.preference_tokens). A
micro-batch lays out `train.batch_size` pairs as samples [chosen_1, rejected_1, chosen_2, ...]: one
packed row with per-sample attention, each pair's prompt stored and computed once for its two answers
(batching.pack_groups; the opening all pairs share, once for the row), or a padded batch where the model
has no packed path.

The loss of a pair compares how much the tuned model raised each answer's log-probability over the
reference, which is the same model with the adapter switched off (no second copy in memory), run under
no_grad on the same rows, or read from values precomputed once (train.precompute_ref_logps):
    delta = (logp_c - ref_c) - (logp_r - ref_r)
    sigmoid: -log sigmoid(beta delta)         hinge: max(0, 1 - beta delta)
    ipo: (delta_c / n_c - delta_r / n_r - 1 / (2 beta))^2, with each side's log-ratio per completion token
    robust: (-(1 - e) log sigmoid(beta delta) + e log sigmoid(-beta delta)) / (1 - 2e), e = label_smoothing
plus, with train.rpo_alpha, alpha times the token-mean NLL of the chosen answers of the step. These are
TRL's DPOTrainer formulas (1.16: `loss_type` and, for rpo_alpha, its `sft` term), checked against it in
tests/unit/training/test_dpo_trl.py. The step's loss is the mean over its pairs.
"""

from __future__ import annotations

import json
from typing import Sequence

import torch
import torch.nn.functional as F

from lorakit.data.template import IGNORE
from lorakit.models.lora import adapter_off
from lorakit.training import batching
from lorakit.training.loss import sample_index
from lorakit.training.objectives.base import Objective, StepLoss

METRICS = ("rewards/chosen", "rewards/rejected", "accuracy", "margin", "logps/chosen", "logps/rejected")
REF_FILE = "ref_logps.json"
REF_TOKENS = 2048  # tokens per forward of the reference precompute (packed rows)


def pair_samples(unit: dict) -> list[dict]:
    """The pair as two SFT-style samples (prompt unsupervised, completion supervised), chosen first."""
    prompt = unit["prompt"]
    return [
        {"input_ids": prompt + unit[side], "labels": [IGNORE] * len(prompt) + unit[side]}
        for side in ("chosen", "rejected")
    ]


def pair_batch(units: Sequence[dict], packing: bool, share_prefix: bool, pad_id: int) -> dict:
    """One forward's pairs: samples [c1, r1, c2, r2, ...], packed or padded, with the pair count, each
    pair's chosen-token count and, when precomputed, the reference log-probs."""
    pairs = [pair_samples(u) for u in units]
    samples = [s for pair in pairs for s in pair]
    if packing and share_prefix and len(units) > 1:  # each pair's prompt once, not once per answer
        batch = batching.pack_groups(pairs)
    else:
        batch = batching.pack(samples, share_prefix) if packing else batching.pad(samples, pad_id)
    batch["pairs"] = len(units)
    batch["chosen_tokens"] = sum(len(u["chosen"]) for u in units)
    if all("ref" in u for u in units):
        batch["ref_logps"] = torch.tensor([u["ref"] for u in units], dtype=torch.float32)
    return batch


def sequence_logps(logp: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample sums of token log-probs and per-sample token counts, shape (2 * pairs,)."""
    index = sample_index(batch)
    n = 2 * batch["pairs"]
    sums = torch.zeros(n, dtype=logp.dtype, device=logp.device).index_add(0, index, logp)
    return sums, torch.bincount(index, minlength=n).to(logp.dtype)


class DPO(Objective):
    name = "dpo"
    data_kind = "pairs"
    unit = "pairs"
    rows_per_unit = 2

    def __init__(self, cfg):
        super().__init__(cfg)
        self._step_pairs = 0
        self._step_chosen_tokens = 0

    def prepare(self, data_cfg, tokenizer, cache_dir):
        from lorakit.data.preference_tokens import prepare_pairs

        return prepare_pairs(data_cfg, tokenizer, cache_dir=cache_dir)

    def unit_tokens(self, unit: dict) -> int:
        return len(unit["prompt"]) * 2 + len(unit["chosen"]) + len(unit["rejected"])

    def unit_supervised(self, unit: dict) -> int:
        return len(unit["chosen"]) + len(unit["rejected"])

    def micro_batches(self, units: Sequence[dict], pad_id: int, budget, world: int) -> list[dict]:
        t = self.cfg.train
        groups = [list(units[i : i + t.batch_size]) for i in range(0, len(units), t.batch_size)]
        if t.packing and budget:  # a pair is never split; a group over the budget is
            groups = [part for g in groups for part in _by_budget(g, budget.tokens)]
        return [pair_batch(g, t.packing, t.share_prefix, pad_id) for g in groups]

    def begin_step(self, micro: list[dict]) -> int:
        self._step_pairs = sum(mb["pairs"] for mb in micro)
        self._step_chosen_tokens = sum(mb["chosen_tokens"] for mb in micro)
        return self._step_pairs

    def loss(self, loss_of, batch: dict) -> StepLoss:
        t = self.cfg.train
        logps, counts = sequence_logps(loss_of(batch, "token_logprobs"), batch)
        if "ref_logps" in batch:
            ref = batch["ref_logps"].to(logps.device).reshape(-1)
        else:
            ref = reference_logps(loss_of, batch)
        chosen, rejected = logps[0::2], logps[1::2]
        chosen_ratio, rejected_ratio = chosen - ref[0::2], rejected - ref[1::2]
        losses = pair_losses(
            t.dpo_loss, t.dpo_beta, t.label_smoothing, chosen_ratio, rejected_ratio, counts[0::2], counts[1::2]
        )
        total = losses.sum()
        if t.rpo_alpha:
            # TRL's `sft` term is a token mean over the batch: its share of this step's pair-mean is
            # pairs_in_step / chosen_tokens_in_step per token
            total = total - t.rpo_alpha * chosen.sum() * (self._step_pairs / max(1, self._step_chosen_tokens))
        with torch.no_grad():
            r_c, r_r = t.dpo_beta * chosen_ratio.detach(), t.dpo_beta * rejected_ratio.detach()
            metrics = {
                "rewards/chosen": r_c.sum(),
                "rewards/rejected": r_r.sum(),
                "accuracy": (r_c > r_r).float().sum(),
                "margin": (r_c - r_r).sum(),
                "logps/chosen": chosen.detach().sum(),
                "logps/rejected": rejected.detach().sum(),
            }
        return StepLoss(total, metrics)

    @torch.no_grad()
    def evaluate(self, loss_of, units, pad_id, device, autocast, budget) -> dict:
        """Held-out preference loss (the training loss's formula over all held-out pairs), accuracy and
        margin; the model in eval mode (no dropout)."""
        was_training = loss_of.training
        loss_of.eval()
        micro = self.micro_batches(units, pad_id, budget, 1)
        n = self.begin_step(micro)
        total, sums = 0.0, {k: 0.0 for k in METRICS}
        for mb in micro:
            mb = batching.to_device(mb, device)
            with autocast:
                out = self.loss(loss_of, mb)
            total += float(out.loss)
            for k, v in out.metrics.items():  # subclasses (ORPO) log metrics of their own too
                sums[k] = sums.get(k, 0.0) + float(v)
        loss_of.train(was_training)
        return {"eval_loss": total / max(1, n), **{f"eval_{k}": v / max(1, n) for k, v in sums.items()}}

    def begin_run(self, setup) -> None:
        """train.precompute_ref_logps: every pair's reference log-probs, computed once per dataset and
        kept in the run folder (ref_logps.json), which a resumed run reads instead of recomputing."""
        if not self.cfg.train.precompute_ref_logps:
            return
        from lorakit.atomic import write_json

        path = setup.run_dir / REF_FILE
        key = setup.data.stats.get("cache_key")
        cached = json.loads(path.read_text()) if path.is_file() else None
        if not cached or cached.get("data") != key:
            cached = {
                "data": key,
                **{name: self._reference_of(setup, getattr(setup.data, name)) for name in ("train", "eval")},
            }
            if setup.dist.rank == 0:
                write_json(path, cached)
        for name in ("train", "eval"):
            for unit, ref in zip(getattr(setup.data, name), cached[name]):
                unit["ref"] = ref

    @torch.no_grad()
    def _reference_of(self, setup, units) -> list[list[float]]:
        """Without gradients nothing is kept for a backward, so packed forwards take pairs up to REF_TOKENS
        tokens (or the training's own budget, if larger): fewer, larger matmuls (on 2 CPU threads the
        precompute of 32 pairs took 6.8 s this way against 8.3 s at 4 pairs per forward)."""
        out = []
        t = self.cfg.train
        if t.packing:
            groups = _by_budget(list(units), max(REF_TOKENS, setup.budget.tokens if setup.budget else 0))
        else:
            groups = [list(units[i : i + t.batch_size]) for i in range(0, len(units), t.batch_size)]
        for group in groups:
            mb = batching.to_device(pair_batch(group, t.packing, t.share_prefix, setup.pad_id), setup.device)
            with setup.autocast:
                ref = reference_logps(setup.loss_of, mb)
            out += ref.reshape(-1, 2).tolist()
        return out


def reference_logps(loss_of, batch: dict) -> torch.Tensor:
    """Per-sample log-probs of the reference: the same model with the adapter off, under no_grad."""
    with torch.no_grad(), adapter_off(loss_of.model):
        return sequence_logps(loss_of(batch, "token_logprobs"), batch)[0]


def pair_losses(kind: str, beta: float, smoothing: float, chosen_ratio, rejected_ratio, n_chosen, n_rejected):
    """Each pair's loss from its log-ratios (tuned minus reference), by train.dpo_loss."""
    delta = chosen_ratio - rejected_ratio
    if kind == "sigmoid":
        return -F.logsigmoid(beta * delta)
    if kind == "hinge":
        return torch.relu(1 - beta * delta)
    if kind == "ipo":  # per-token log-ratios (TRL's normalisation, confirmed with the IPO authors)
        return (chosen_ratio / n_chosen.clamp(min=1) - rejected_ratio / n_rejected.clamp(min=1) - 1 / (2 * beta)) ** 2
    if kind == "robust":
        clean = -(1 - smoothing) * F.logsigmoid(beta * delta)
        flipped = -smoothing * F.logsigmoid(-beta * delta)
        return (clean - flipped) / (1 - 2 * smoothing)
    raise ValueError(f"unknown DPO loss {kind!r}")


def _by_budget(units: list[dict], budget: int) -> list[list[dict]]:
    groups: list[list[dict]] = []
    size = 0
    for u in units:
        n = len(u["prompt"]) + len(u["chosen"]) + len(u["rejected"])
        if groups and size + n <= budget:
            groups[-1].append(u)
            size += n
        else:
            groups.append([u])
            size = n
    return groups
