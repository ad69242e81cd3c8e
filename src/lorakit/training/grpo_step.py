"""One GRPO generation batch, from completions to the loss of a micro-batch, on lorakit's packed rows.

    completions --rewards--> advantages --units--> packed micro-batches --> per-token terms --> loss

A group's completions share their prompt: packed with `share_prefix`, the prompt is in the row once
and computed once (exact: causal attention). Each completion is one unit whose supervised tokens are
its completion tokens, the end-of-sequence token included, as TRL trains them. Units are plain data
(lists and floats), so a generation batch reused over `num_iterations` steps goes into the checkpoint
as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from lorakit.data.template import IGNORE
from lorakit.training import batching, grpo_loss
from lorakit.training.loss import CHUNK, decoder_inputs, logit_transform
from lorakit.training.rewards import Reward, Scores, score
from lorakit.training.rollout import Completion


@dataclass
class GRPOSettings:
    """The train.* keys GRPO reads (see config.py for their descriptions)."""

    num_generations: int = 4
    max_completion_length: int = 256
    temperature: float = 1.0
    beta: float = 0.0
    epsilon: float = 0.2
    epsilon_high: float | None = None
    num_iterations: int = 1
    loss_type: str = "dapo"
    scale_rewards: str = "group"
    mask_truncated_completions: bool = False
    kl_ratio_correction: bool = True


def completion_units(
    completions: list[Completion], advantages: torch.Tensor, mask_truncated: bool = False
) -> list[dict]:
    """One unit per completion, for packing: the prompt unsupervised, the completion supervised (not at
    all when it was cut by the length limit and `mask_truncated` is on: TRL's mask_truncated_completions),
    with its advantage."""
    out = []
    for c, a in zip(completions, advantages.tolist()):
        masked = mask_truncated and c.truncated
        labels = [IGNORE] * len(c.prompt_ids) + ([IGNORE] * len(c.completion_ids) if masked else c.completion_ids)
        out.append({"input_ids": c.prompt_ids + c.completion_ids, "labels": labels, "advantage": a})
    return out


def completion_tokens(unit: dict) -> int:
    """Supervised tokens of a completion unit (0 for a masked truncated one)."""
    return sum(1 for x in unit["labels"][1:] if x != IGNORE)


def score_completions(
    completions: list[Completion], records: list[dict], rewards: list[Reward], settings: GRPOSettings
) -> tuple[Scores, torch.Tensor, dict[str, float]]:
    """Rewards, advantages and the rollout's metrics. `records[c.group]` is the prompt record of c;
    its other columns go to the reward functions, one value per completion."""
    rows = [records[c.group] for c in completions]
    prompts = [r["prompt"] for r in rows]
    texts = [
        [{"role": "assistant", "content": c.text}] if isinstance(p, list) else c.text
        for c, p in zip(completions, prompts)
    ]
    columns = {k: [r.get(k) for r in rows] for k in rows[0] if k not in ("prompt", "prompt_ids")}
    scores = score(rewards, prompts, texts, [c.completion_ids for c in completions], columns)
    advantages, zero_std = grpo_loss.group_advantages(scores.total, settings.num_generations, settings.scale_rewards)
    lengths = torch.tensor([len(c.completion_ids) for c in completions], dtype=torch.float32)
    metrics = {
        **scores.metrics(),
        "frac_reward_zero_std": float(zero_std.float().mean()),
        "completions/mean_length": float(lengths.mean()),
        "completions/clipped_ratio": sum(c.truncated for c in completions) / len(completions),
    }
    return scores, advantages, metrics


def completion_table(completions: list[Completion], records: list[dict], scores: Scores, rows: int = 4) -> list[dict]:
    """A few completions with their rewards (from different groups first), for the logs."""
    step = max(1, len(completions) // max(1, rows))
    out = []
    for i in list(range(0, len(completions), step))[:rows]:
        prompt = records[completions[i].group]["prompt"]
        text = prompt[-1]["content"] if isinstance(prompt, list) else prompt
        out.append(
            {
                "prompt": text,
                "completion": completions[i].text,
                "reward": _float(scores.total[i]),
                **{n: _float(scores.per_function[i, j]) for j, n in enumerate(scores.names)},
            }
        )
    return out


def pack_completions(units: list[dict], packing: bool = True, share_prefix: bool = True, pad_id: int = 0) -> dict:
    """One forward's completions: a packed row (a group's shared prompt stored once) or a padded batch,
    plus what the loss needs, per supervised token in row order: `sample` (which completion),
    `advantages`, and the old / reference log-probs when the units carry them."""
    samples = [{"input_ids": u["input_ids"], "labels": u["labels"]} for u in units]
    groups = _by_prompt(samples)
    if packing and share_prefix and len(groups) > 1:  # each prompt once, however many share the forward
        batch = batching.pack_groups(groups)
    else:
        batch = batching.pack(samples, share_prefix) if packing else batching.pad(samples, pad_id)
    counts = torch.tensor([completion_tokens(u) for u in units])
    sample = torch.repeat_interleave(torch.arange(len(units)), counts)
    batch["sample"] = sample
    batch["n_samples"] = len(units)
    batch["completion_tokens"] = int(counts.sum())
    batch["advantages"] = torch.tensor([u["advantage"] for u in units], dtype=torch.float32)[sample]
    for key in ("old_logps", "ref_logps"):
        if all(key in u for u in units):
            batch[key] = torch.tensor([x for u in units for x in u[key]], dtype=torch.float32)
    return batch


def _by_prompt(samples: list[dict]) -> list[list[dict]]:
    """Consecutive samples with the same prompt (the unsupervised tokens before the first label), together,
    in order: a rollout's completions of one prompt sit next to each other."""
    groups: list[list[dict]] = []
    last = None
    for s in samples:
        first = next((i for i, x in enumerate(s["labels"]) if x != IGNORE), len(s["labels"]))
        prompt = s["input_ids"][:first]
        if groups and prompt == last:
            groups[-1].append(s)
        else:
            groups.append([s])
        last = prompt
    return groups


def completion_logprobs(model, batch: dict, temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of every supervised token of `batch` under `model`, the logits divided by
    `temperature` after the model's own scale and softcap (as TRL scores them), in row order.

    The plain head + log_softmax, a chunk of logits at a time: the reference the fused path is checked
    against, and the path for temperature != 1 (the fused head has no temperature).
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = causal_lm.get_decoder(), causal_lm.get_output_embeddings()
    hidden = decoder(**decoder_inputs(batch), use_cache=False).last_hidden_state
    keep = batch["shift_labels"] != IGNORE
    hidden, targets = hidden[keep], batch["shift_labels"][keep]
    scale, softcap = logit_transform(causal_lm.config)
    out = []
    for start in range(0, targets.numel(), CHUNK):
        logits = head(hidden[start : start + CHUNK]).float()
        if scale != 1.0:
            logits = logits * scale
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        logp = F.log_softmax(logits / temperature, dim=-1)
        out.append(logp.gather(1, targets[start : start + CHUNK, None]).squeeze(1))
    return torch.cat(out) if out else hidden.new_zeros(0, dtype=torch.float32)


@torch.no_grad()
def attach_fixed_logprobs(
    units: list[dict],
    logprobs: Callable[[dict], torch.Tensor],
    key: str,
    per_forward: int,
    pack: Callable[[list[dict]], dict],
) -> None:
    """Store each unit's completion-token log-probs under `key` ("old_logps": the policy at rollout time,
    for num_iterations > 1; "ref_logps": computed with the adapter off by the caller's `logprobs`)."""
    for start in range(0, len(units), per_forward):
        part = units[start : start + per_forward]
        values = logprobs(pack(part)).float().cpu()
        for u, v in zip(part, values.split([completion_tokens(u) for u in part])):
            u[key] = v.tolist()


def micro_loss(logp: torch.Tensor, batch: dict, settings: GRPOSettings) -> tuple[torch.Tensor, dict[str, float]]:
    """The micro-batch's share of the step's loss before the step's denominator (see step_denominator),
    and metric sums over its tokens (KL, clip counts)."""
    device = logp.device
    get = lambda key: batch[key].to(device) if key in batch else None  # noqa: E731
    advantages = get("advantages")
    terms = grpo_loss.token_terms(
        logp,
        get("old_logps"),
        get("ref_logps"),
        advantages,
        settings.beta,
        settings.epsilon,
        settings.epsilon_high,
        settings.kl_ratio_correction,
    )
    summed = grpo_loss.summed_loss(terms.loss, get("sample"), batch["n_samples"], settings.loss_type)
    if settings.loss_type == "bnpo":  # TRL normalises bnpo per micro-batch
        summed = summed / max(1, logp.numel())
    tokens = logp.numel()
    stats = grpo_loss.clip_stats(terms.ratio.detach(), advantages, settings.epsilon, settings.epsilon_high)
    metrics = {k: v * tokens for k, v in stats.items()}
    if terms.kl is not None:
        metrics["kl"] = float(terms.kl.detach().sum())
    return summed, metrics


def step_denominator(settings: GRPOSettings, completions: int, tokens: int, n_micro: int) -> int:
    """What the summed micro-batch losses of a step are divided by, so that the step's loss is TRL's:
    grpo counts the step's completions, dr_grpo completions x max_completion_length, dapo the step's
    completion tokens, bnpo the micro-batches (each already divided by its own tokens)."""
    if settings.loss_type == "bnpo":
        return n_micro
    return int(grpo_loss.denominator(settings.loss_type, completions, tokens, settings.max_completion_length))


def _float(x: torch.Tensor) -> float | None:
    value = float(x)
    return None if value != value else value
