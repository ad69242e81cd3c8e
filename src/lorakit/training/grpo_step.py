"""One GRPO generation batch, from prompts to the loss of a micro-batch, on lorakit's packed rows.

    prompts --rollout--> completions --rewards--> advantages --pack--> micro-batches --> loss

A group's completions share their prompt: packed with `share_prefix`, the prompt is in the row once
and computed once (exact: causal attention). Each completion is one sample whose supervised tokens are
its completion tokens, the end-of-sequence token included, as TRL trains them.

`GenerationBatch` is what a run must keep between the optimizer steps that reuse it
(`num_iterations` > 1): the samples, their advantages, the old policy's and the reference's
per-token log-probabilities. It is plain data, so it goes into the checkpoint as it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lorakit.data.template import IGNORE
from lorakit.training import batching, grpo_loss
from lorakit.training.loss import logit_transform
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


@dataclass
class GenerationBatch:
    samples: list[dict]  # {"input_ids", "labels"}: prompt + completion, labels on the completion
    advantages: torch.Tensor  # one per sample
    old_logps: list[torch.Tensor] | None = None  # per sample, its completion tokens (num_iterations > 1)
    ref_logps: list[torch.Tensor] | None = None  # likewise, adapter off (beta > 0)
    metrics: dict[str, float] = field(default_factory=dict)
    table: list[dict] = field(default_factory=list)  # a few completions with their rewards, for the logs

    @property
    def completion_tokens(self) -> int:
        return sum(_n_completion(s) for s in self.samples)


def make_samples(completions: list[Completion], mask_truncated: bool = False) -> list[dict]:
    """Samples for packing: the prompt unsupervised, the completion supervised (or not at all when it
    was cut by the length limit and `mask_truncated` is on, as TRL's mask_truncated_completions)."""
    out = []
    for c in completions:
        masked = mask_truncated and c.truncated
        labels = [IGNORE] * len(c.prompt_ids) + ([IGNORE] * len(c.completion_ids) if masked else c.completion_ids)
        out.append({"input_ids": c.prompt_ids + c.completion_ids, "labels": labels})
    return out


def score_completions(completions: list[Completion], records: list[dict], rewards: list[Reward],
                      settings: GRPOSettings) -> tuple[Scores, torch.Tensor, dict[str, float]]:
    """Rewards, advantages and the rollout's metrics. `records[c.group]` is the prompt record of c;
    its other columns go to the reward functions, one value per completion."""
    rows = [records[c.group] for c in completions]
    prompts = [r["prompt"] for r in rows]
    texts = [[{"role": "assistant", "content": c.text}] if isinstance(p, list) else c.text
             for c, p in zip(completions, prompts)]
    columns = {k: [r.get(k) for r in rows] for k in rows[0] if k != "prompt"}
    scores = score(rewards, prompts, texts, [c.completion_ids for c in completions], columns)
    advantages, zero_std = grpo_loss.group_advantages(scores.total, settings.num_generations,
                                                      settings.scale_rewards)
    lengths = torch.tensor([len(c.completion_ids) for c in completions], dtype=torch.float32)
    metrics = {**scores.metrics(), "frac_reward_zero_std": float(zero_std.float().mean()),
               "completions/mean_length": float(lengths.mean()),
               "completions/clipped_ratio": sum(c.truncated for c in completions) / len(completions)}
    return scores, advantages, metrics


def completion_table(completions: list[Completion], records: list[dict], scores: Scores, rows: int = 4) -> list[dict]:
    """The first `rows` completions with their rewards (one per group first), for tracking and reports."""
    order = sorted(range(len(completions)), key=lambda i: (i % max(1, len(completions) // max(1, rows)), i))
    out = []
    for i in order[:rows]:
        prompt = records[completions[i].group]["prompt"]
        text = prompt[-1]["content"] if isinstance(prompt, list) else prompt
        out.append({"prompt": text, "completion": completions[i].text, "reward": _float(scores.total[i]),
                    **{n: _float(scores.per_function[i, j]) for j, n in enumerate(scores.names)}})
    return out


def micro_batch_groups(n_samples: int, batch_size: int) -> list[list[int]]:
    """Sample indices of each micro-batch: `batch_size` consecutive completions (TRL's per-device batch)."""
    return [list(range(s, min(s + batch_size, n_samples))) for s in range(0, n_samples, batch_size)]


def pack_micro(gen: GenerationBatch, indices: list[int], share_prefix: bool = True) -> dict:
    """A packed row of the given samples, plus what the loss needs: which sample each supervised token
    belongs to (`sample`, in row order) and the per-token advantages / old / reference log-probs."""
    samples = [gen.samples[i] for i in indices]
    batch = batching.pack(samples, share_prefix)
    counts = [_n_completion(s) for s in samples]
    local = torch.repeat_interleave(torch.arange(len(samples)), torch.tensor(counts))
    batch["sample"] = local
    batch["n_samples"] = len(samples)
    batch["advantages"] = gen.advantages[indices][local]
    if gen.old_logps is not None:
        batch["old_logps"] = torch.cat([gen.old_logps[i] for i in indices])
    if gen.ref_logps is not None:
        batch["ref_logps"] = torch.cat([gen.ref_logps[i] for i in indices])
    return batch


def completion_logprobs(model, batch: dict, temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of every supervised token of a packed row under `model`, logits divided by
    `temperature` (as TRL scores them), in row order.

    TODO(seam): replace with the fused training.loss.token_logprobs once the objective seam lands; this
    is the plain head + log_softmax, a chunk of logits at a time.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = causal_lm.get_decoder(), causal_lm.get_output_embeddings()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    if "shared_prefix" in batch:
        inputs["shared_prefix_len"] = batch["shared_prefix"]
    if "segments" in batch:
        inputs["sample_segments"] = batch["segments"]
    hidden = decoder(**inputs, use_cache=False).last_hidden_state
    keep = batch["shift_labels"] != IGNORE
    hidden, targets = hidden[keep], batch["shift_labels"][keep]
    scale, softcap = logit_transform(causal_lm.config)
    out = []
    for start in range(0, targets.numel(), 1024):
        logits = head(hidden[start:start + 1024]).float()
        if scale != 1.0:
            logits = logits * scale
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        logp = F.log_softmax(logits / temperature, dim=-1)
        out.append(logp.gather(1, targets[start:start + 1024, None]).squeeze(1))
    return torch.cat(out) if out else hidden.new_zeros(0, dtype=torch.float32)


@torch.no_grad()
def fixed_logprobs(model, gen: GenerationBatch, batch_size: int, temperature: float, reference: bool
                   ) -> list[torch.Tensor]:
    """Per-sample log-probs of the completion tokens under the model as it is now (the old policy) or,
    with `reference`, with the adapter switched off: no second model in memory."""
    out: list[torch.Tensor] = []
    for indices in micro_batch_groups(len(gen.samples), batch_size):
        batch = pack_micro(GenerationBatch(gen.samples, gen.advantages), indices)
        if reference:
            with model.disable_adapter():
                logp = completion_logprobs(model, batch, temperature)
        else:
            logp = completion_logprobs(model, batch, temperature)
        out += list(logp.split([_n_completion(gen.samples[i]) for i in indices]))
    return out


def micro_loss(model, batch: dict, settings: GRPOSettings) -> tuple[torch.Tensor, dict[str, float]]:
    """Numerator of the step's loss for one packed micro-batch (see grpo_loss.summed_loss), and the sums
    of its metrics (KL and clip shares are token sums; divide by the tokens)."""
    logp = completion_logprobs(model, batch, settings.temperature)
    terms = grpo_loss.token_terms(logp, batch.get("old_logps"), batch.get("ref_logps"), batch["advantages"],
                                  settings.beta, settings.epsilon, settings.epsilon_high, settings.kl_ratio_correction)
    summed = grpo_loss.summed_loss(terms.loss, batch["sample"], batch["n_samples"], settings.loss_type)
    tokens = logp.numel()
    stats = grpo_loss.clip_stats(terms.ratio.detach(), batch["advantages"], settings.epsilon, settings.epsilon_high)
    metrics = {k: v * tokens for k, v in stats.items()}
    if terms.kl is not None:
        metrics["kl"] = float(terms.kl.detach().sum())
    metrics["tokens"] = float(tokens)
    return summed, metrics


def step_denominator(settings: GRPOSettings, gen: GenerationBatch, micro_tokens: int, n_micro: int) -> float:
    """What a micro-batch's summed loss is divided by, so that the micro-batches of a step add up to
    TRL's loss for that step: grpo and dr_grpo count the step's completions, dapo the generation batch's
    completion tokens, bnpo the micro-batch's own tokens times the number of micro-batches (TRL
    normalises bnpo per micro-batch, then averages over gradient accumulation)."""
    if settings.loss_type == "bnpo":
        return grpo_loss.denominator("bnpo", 0, micro_tokens, 0) * n_micro
    return grpo_loss.denominator(settings.loss_type, len(gen.samples), gen.completion_tokens,
                                 settings.max_completion_length)


def timed(fn, *args, **kwargs):
    """(result, seconds): the generation / training time split the logs report."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def _n_completion(sample: dict) -> int:
    return sum(1 for x in sample["labels"][1:] if x != IGNORE)


def _float(x: torch.Tensor) -> float | None:
    value = float(x)
    return None if value != value else value
