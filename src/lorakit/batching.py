"""Turn tokenized samples into model inputs: padding-free packing (default) or pad-to-longest.

Packing puts all samples of a micro-batch into one row; position ids restart at 0 for each sample,
which transformers turns into a block-diagonal causal mask, so samples never attend to each other
and no compute is spent on padding.
"""

from __future__ import annotations

import random
from typing import Iterator, Sequence

import torch

IGNORE = -100


def step_order(n_samples: int, epoch: int, seed: int) -> list[int]:
    """The sample order of one epoch: a permutation fixed by (seed, epoch), so a resumed run replays it."""
    order = list(range(n_samples))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def optimizer_steps(n_samples: int, samples_per_step: int, epochs: float, max_steps: int | None,
                    seed: int) -> Iterator[tuple[int, int, list[int]]]:
    """Yield (step, epoch, sample indices) for every optimizer step of the run, 1-based steps."""
    steps_per_epoch = max(1, -(-n_samples // samples_per_step))
    total = max_steps or max(1, round(epochs * steps_per_epoch))
    step, epoch = 0, 0
    while step < total:
        order = step_order(n_samples, epoch, seed)
        for start in range(0, n_samples, samples_per_step):
            step += 1
            yield step, epoch, order[start:start + samples_per_step]
            if step >= total:
                return
        epoch += 1


def total_steps(n_samples: int, samples_per_step: int, epochs: float, max_steps: int | None) -> int:
    steps_per_epoch = max(1, -(-n_samples // samples_per_step))
    return max_steps or max(1, round(epochs * steps_per_epoch))


def pack(samples: Sequence[dict]) -> dict[str, torch.Tensor]:
    """One row holding every sample back to back; position ids restart per sample."""
    ids, labels, pos = [], [], []
    for s in samples:
        n = len(s["input_ids"])
        ids += s["input_ids"]
        # Shift labels here so that token t predicts t+1 within its own sample only.
        labels += list(s["labels"][1:]) + [IGNORE]
        pos += range(n)
    return {
        "input_ids": torch.tensor([ids]),
        "position_ids": torch.tensor([pos]),
        "shift_labels": torch.tensor([labels]),
    }


def pad(samples: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest sample (right padding) with an attention mask: the classic collator."""
    width = max(len(s["input_ids"]) for s in samples)
    ids = torch.full((len(samples), width), pad_id)
    labels = torch.full((len(samples), width), IGNORE)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s["input_ids"])
        ids[i, :n] = torch.tensor(s["input_ids"])
        labels[i, : n - 1] = torch.tensor(s["labels"][1:])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "shift_labels": labels}


def micro_batches(samples: Sequence[dict], batch_size: int, packing: bool, pad_id: int) -> list[dict]:
    """Split one optimizer step's samples into micro-batches of `batch_size` samples."""
    groups = [samples[i:i + batch_size] for i in range(0, len(samples), batch_size)]
    return [pack(g) if packing else pad(g, pad_id) for g in groups]


def supervised_tokens(batch: dict) -> int:
    return int((batch["shift_labels"] != IGNORE).sum())


def real_tokens(batch: dict) -> int:
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())
