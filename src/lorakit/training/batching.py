"""Turn tokenized samples into model inputs: padding-free packing (default) or pad-to-longest.

Packing puts all samples of a micro-batch into one row; position ids restart at 0 for each sample,
so samples never attend to each other (lorakit.training.attention keeps attention within each sample; plain
transformers turns the restarts into a block-diagonal mask) and no compute is spent on padding.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from lorakit.data.template import IGNORE  # the label of tokens without loss; defined once, by the data stage


def pad_token_id(tokenizer) -> int:
    """The id padded batches are filled with (never supervised: labels there are IGNORE)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def step_order(n_samples: int, epoch: int, seed: int) -> list[int]:
    """The sample order of one epoch: a permutation fixed by (seed, epoch), so a resumed run replays it."""
    order = list(range(n_samples))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def optimizer_steps(
    n_samples: int, samples_per_step: int, epochs: float, max_steps: int | None, seed: int
) -> Iterator[tuple[int, int, list[int]]]:
    """Yield (step, epoch, sample indices) for every optimizer step of the run, 1-based steps."""
    steps_per_epoch = max(1, -(-n_samples // samples_per_step))
    total = max_steps or max(1, round(epochs * steps_per_epoch))
    step, epoch = 0, 0
    while step < total:
        order = step_order(n_samples, epoch, seed)
        for start in range(0, n_samples, samples_per_step):
            step += 1
            yield step, epoch, order[start : start + samples_per_step]
            if step >= total:
                return
        epoch += 1


def total_steps(n_samples: int, samples_per_step: int, epochs: float, max_steps: int | None) -> int:
    steps_per_epoch = max(1, -(-n_samples // samples_per_step))
    return max_steps or max(1, round(epochs * steps_per_epoch))


def pack(samples: Sequence[dict], share_prefix: bool = False) -> dict[str, torch.Tensor]:
    """One row holding every sample back to back; position ids restart per sample.

    share_prefix: the unsupervised prefix common to all samples (a fixed system prompt and the chat
    template's opening, ~27% of the tokens on huanhuan-style data) is put in the row once; each sample
    then holds only its own tokens, positioned after the prefix. The row's "shared_prefix" says how
    long the prefix is; attention.packed_attention lets every sample attend to it. Causal attention
    makes this exact: the prefix's hidden states cannot depend on what follows it.
    """
    n_shared = shared_prefix_length(samples) if share_prefix else 0
    ids, labels, pos = list(samples[0]["input_ids"][:n_shared]), [IGNORE] * n_shared, list(range(n_shared))
    segments = [(0, n_shared)] if n_shared else []
    for s in samples:
        n = len(s["input_ids"])
        segments.append((len(ids), len(ids) + n - n_shared))
        ids += s["input_ids"][n_shared:]
        # Shift labels here so that token t predicts t+1 within its own sample only.
        labels += list(s["labels"][n_shared + 1 :]) + [IGNORE]
        pos += range(n_shared, n)
    batch = {
        "input_ids": torch.tensor([ids]),
        "position_ids": torch.tensor([pos]),
        "shift_labels": torch.tensor([labels]),
        "sample_tokens": sum(len(s["input_ids"]) for s in samples),
        "segments": segments,  # (start, end) in the row: the prefix, then each sample's own tokens
    }
    if n_shared:
        batch["shared_prefix"] = n_shared
    return batch


def pack_groups(groups: Sequence[Sequence[dict]]) -> dict:
    """One row for samples that come in groups sharing a prompt (a preference pair's chosen and rejected,
    a GRPO prompt's completions): the prefix common to every sample is stored once, then each group's
    own further shared prefix once, then each sample's own tokens, so every group's prompt is computed
    once however many groups share the forward (pack with share_prefix shares only the row-wide prefix).

    Each segment of the row attends causally to itself after the segments its "contexts" entry names,
    and "samples" says which segments are samples (the others are prefixes, without labels). Exact for
    the same reason as pack: a prefix's hidden states cannot depend on what follows it."""
    everyone = [s for g in groups for s in g]
    n_row = shared_prefix_length(everyone)
    ids, labels, pos = list(everyone[0]["input_ids"][:n_row]), [IGNORE] * n_row, list(range(n_row))
    segments, contexts, samples = [], [], []
    row_prefix: tuple = ()
    if n_row:
        segments.append((0, n_row))
        contexts.append(())
        row_prefix = ((0, n_row),)
    for group in groups:
        n_group = max(shared_prefix_length(group), n_row) if len(group) > 1 else n_row
        context = row_prefix
        if n_group > n_row:  # the group's own part of its prompt, once
            start = len(ids)
            ids += group[0]["input_ids"][n_row:n_group]
            labels += [IGNORE] * (n_group - n_row)
            pos += range(n_row, n_group)
            segments.append((start, len(ids)))
            contexts.append(row_prefix)
            context = row_prefix + ((start, len(ids)),)
        for s in group:
            n = len(s["input_ids"])
            samples.append(len(segments))
            segments.append((len(ids), len(ids) + n - n_group))
            contexts.append(context)
            ids += s["input_ids"][n_group:]
            labels += list(s["labels"][n_group + 1 :]) + [IGNORE]  # t predicts t+1 within its own sample
            pos += range(n_group, n)
    return {
        "input_ids": torch.tensor([ids]),
        "position_ids": torch.tensor([pos]),
        "shift_labels": torch.tensor([labels]),
        "sample_tokens": sum(len(s["input_ids"]) for s in everyone),
        "segments": segments,
        "contexts": contexts,
        "samples": samples,
    }


def shared_prefix_length(samples: Sequence[dict]) -> int:
    """Tokens at the start that every sample has and none supervises (nor predicts the next of); 0 for a
    single sample or when every sample would be left without a token of its own."""
    if len(samples) < 2:
        return 0
    first = samples[0]["input_ids"]
    limit = min(len(s["input_ids"]) for s in samples) - 1  # each sample keeps at least one token
    n = 0
    while n < limit and all(s["input_ids"][n] == first[n] for s in samples):
        n += 1
    # position n-1 predicts token n, so n stops one short of the first supervised label of any sample
    first_label = min(next((i for i, x in enumerate(s["labels"]) if x != IGNORE), len(s["labels"])) for s in samples)
    n = min(n, first_label - 1)
    return n if n > 1 else 0


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


@dataclass(frozen=True)
class TokenBudget:
    """How many tokens one packed row (one forward) may hold, and how the budget is used.

    fill: pack as many of the step's samples as fit (fewer, larger forwards; what pays on a GPU).
    Otherwise it is only a cap: forwards keep `batch_size` samples and only a micro-batch whose row would
    exceed the budget is split, so the peak memory of a long run no longer follows its longest samples.
    """

    tokens: int
    fill: bool = True


def micro_batches(
    samples: Sequence[dict],
    batch_size: int,
    packing: bool,
    pad_id: int,
    share_prefix: bool = False,
    budget: TokenBudget | None = None,
    min_groups: int = 1,
) -> list[dict]:
    """Split one optimizer step's samples into micro-batches: `batch_size` samples each, regrouped by a
    token `budget` when packing (see TokenBudget; a group holds at least one sample, and a filled budget
    makes at least `min_groups` micro-batches, one per process). The step's gradient is the same either
    way: the loss is normalised over the whole step, so the split only trades memory for fewer, larger
    forwards."""
    if packing and budget and budget.fill:
        groups = token_groups(samples, budget.tokens, min_groups, share_prefix)
    else:
        groups = [samples[i : i + batch_size] for i in range(0, len(samples), batch_size)]
        if packing and budget:
            groups = [part for g in groups for part in token_groups(g, budget.tokens, 1, share_prefix)]
    return [pack(g, share_prefix) if packing else pad(g, pad_id) for g in groups]


def token_groups(
    samples: Sequence[dict], budget: int, min_groups: int = 1, share_prefix: bool = False
) -> list[list[dict]]:
    """Consecutive samples, grouped greedily so that each group's packed row stays within `budget`
    tokens (counted as pack lays it out: with share_prefix, the common prefix once)."""
    total = sum(len(s["input_ids"]) for s in samples)
    budget = min(budget, max(1, -(-total // max(1, min_groups))))
    groups: list[list[dict]] = []
    for s in samples:
        if groups and row_length(groups[-1] + [s], share_prefix) <= budget:
            groups[-1].append(s)
        else:
            groups.append([s])
    return groups


def row_length(samples: Sequence[dict], share_prefix: bool = False) -> int:
    """Tokens in the row pack(samples, share_prefix) would build."""
    n_shared = shared_prefix_length(samples) if share_prefix else 0
    return n_shared + sum(len(s["input_ids"]) - n_shared for s in samples)


def to_device(batch: dict, device: str) -> dict:
    """Tensors moved to `device`; counts stay Python ints, so reading them never waits on a GPU."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def supervised_tokens(batch: dict) -> int:
    return int((batch["shift_labels"] != IGNORE).sum())


def real_tokens(batch: dict) -> int:
    """Tokens of the samples in `batch` (padding and the saving of a shared prefix not counted)."""
    if "sample_tokens" in batch:
        return batch["sample_tokens"]
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())
