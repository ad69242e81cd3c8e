"""Causal-LM loss computed only where there are labels, in chunks.

The vocabulary of Qwen3 has 151,936 entries: full logits for a 2,048-token row are 1.2 GB in fp32
(twice that with their gradient). Running the LM head only on supervised positions, a chunk at a
time, keeps the peak to one chunk of logits. For a plain frozen head the gradient with respect to
the hidden states is computed in the same pass as the loss (softmax minus one-hot, times the head
weight), so the head's matmul is never recomputed in backward. On a CPU such a head also walks the
vocabulary in chunks with a running max and sum (_head_chunk), so a chunk of logits stays in cache.

What a model's causal-LM forward does to the head's output before its loss is done here too, since
the loss runs the head itself: Granite divides the logits by `logits_scaling`, Cohere multiplies them
by `logit_scale`, Gemma2/3 cap them with `final_logit_softcapping` (cap * tanh(logits / cap)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lorakit.data.template import IGNORE
from lorakit.training import batching

CHUNK = 1024
# vocabulary entries per step of the CPU head (_head_chunk): 4,096 x 576 fp32 of head and 1,024 rows of
# logits stay within a 32 MB last-level cache
VOCAB_CHUNK = 4096


def perplexity(loss: float) -> float:
    """exp(token-mean loss), capped so a diverged run reports a huge number rather than overflowing."""
    return math.exp(min(loss, 50))


def logit_transform(config) -> tuple[float, float]:
    """(scale, softcap) the causal-LM forward applies to the head's output: logits * scale, then
    softcap * tanh(logits / softcap) when softcap is not 0."""
    scale = 1.0
    if getattr(config, "logits_scaling", None):  # Granite: logits / logits_scaling
        scale /= float(config.logits_scaling)
    if getattr(config, "logit_scale", None):  # Cohere: logits * logit_scale
        scale *= float(config.logit_scale)
    return scale, float(getattr(config, "final_logit_softcapping", None) or 0.0)


def _transform(logits: torch.Tensor, scale: float, softcap: float) -> torch.Tensor:
    if scale != 1.0:
        logits = logits * scale
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def _chunk_loss(
    head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, scale: float = 1.0, softcap: float = 0.0
) -> torch.Tensor:
    logits = _transform(head(hidden).float(), scale, softcap)
    return F.cross_entropy(logits, targets, reduction="sum")


def summed_loss(model: torch.nn.Module, batch: dict, neftune_alpha: float = 0.0) -> torch.Tensor:
    """Sum of token losses over supervised positions of `batch` (divide by the token count yourself).
    `neftune_alpha` > 0 adds NEFTune noise to the input embeddings (see `neftune_noise`)."""
    head, hidden, targets, scale, softcap = _supervised_hidden(model, batch, neftune_alpha)
    if _fusable(head):
        if torch.is_grad_enabled():
            return _FusedHeadLoss.apply(hidden, head.weight, targets, scale, softcap)
        return -_head_logprobs(hidden, head.weight, targets, scale, softcap).sum()
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, targets.numel(), CHUNK):
        h, t = hidden[start : start + CHUNK], targets[start : start + CHUNK]
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss, head, h, t, scale, softcap, use_reentrant=False)
        else:
            total = total + _chunk_loss(head, h, t, scale, softcap)
    return total


def token_logprobs(model: torch.nn.Module, batch: dict, neftune_alpha: float = 0.0) -> torch.Tensor:
    """log p(target) of every supervised position of `batch`, in row order (float32, one per position).
    The head runs only on those positions, a chunk at a time: no full-vocabulary logits. Preference and
    RL objectives sum them per sample (`sample_index` says which position belongs to which sample)."""
    head, hidden, targets, scale, softcap = _supervised_hidden(model, batch, neftune_alpha)
    if _fusable(head):
        if torch.is_grad_enabled():
            return _FusedHeadLogprobs.apply(hidden, head.weight, targets, scale, softcap)
        return _head_logprobs(hidden, head.weight, targets, scale, softcap)
    parts = []
    for start in range(0, targets.numel(), CHUNK):
        h, t = hidden[start : start + CHUNK], targets[start : start + CHUNK]
        if torch.is_grad_enabled():
            parts.append(checkpoint(_chunk_logprobs, head, h, t, scale, softcap, use_reentrant=False))
        else:
            parts.append(_chunk_logprobs(head, h, t, scale, softcap))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


def sample_index(batch: dict) -> torch.Tensor:
    """For each supervised position of `batch` (the order of token_logprobs), the sample it belongs to:
    the row of a padded batch, or the sample's place in a packed row (a shared prefix is no sample)."""
    labels = batch["shift_labels"]
    keep = labels != IGNORE
    if "segments" not in batch:
        return keep.nonzero()[:, 0]
    owner = torch.full((labels.shape[-1],), -1, dtype=torch.long, device=labels.device)
    if "samples" in batch:  # batching.pack_groups: prefixes are segments too, but no samples
        segments = [batch["segments"][i] for i in batch["samples"]]
    else:
        segments = batch["segments"][1:] if batch.get("shared_prefix") else batch["segments"]
    for k, (a, b) in enumerate(segments):
        owner[a:b] = k
    return owner[keep[0]]


def decoder_inputs(batch: dict) -> dict:
    """The decoder's keyword arguments for a batching row or padded batch: its tensors, and the row's
    layout for lorakit.training.attention.packed_attention (the shared prefix's length, where each
    segment lies as Python ints, and what each segment attends to before itself)."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    if "shared_prefix" in batch:
        inputs["shared_prefix_len"] = batch["shared_prefix"]
    if "segments" in batch:
        inputs["sample_segments"] = batch["segments"]
    if "contexts" in batch:  # batching.pack_groups
        inputs["segment_contexts"] = batch["contexts"]
    return inputs


def _supervised_hidden(model, batch: dict, neftune_alpha: float):
    """(head, hidden states at the supervised positions, their targets, logit scale, softcap)."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = causal_lm.get_decoder(), causal_lm.get_output_embeddings()
    inputs = decoder_inputs(batch)
    if neftune_alpha:
        embeds = decoder.get_input_embeddings()(inputs.pop("input_ids"))
        inputs["inputs_embeds"] = embeds + neftune_noise(embeds, batch, neftune_alpha)
    hidden = decoder(**inputs, use_cache=False).last_hidden_state
    labels = batch["shift_labels"]
    keep = labels != IGNORE
    scale, softcap = logit_transform(causal_lm.config)
    return head, hidden[keep], labels[keep], scale, softcap


def _chunk_logprobs(
    head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, scale: float = 1.0, softcap: float = 0.0
) -> torch.Tensor:
    logits = _transform(head(hidden).float(), scale, softcap)
    return -F.cross_entropy(logits, targets, reduction="none")


def neftune_noise(embeds: torch.Tensor, batch: dict, alpha: float) -> torch.Tensor:
    """NEFTune (Jain et al., 2023): uniform noise in [-m, m], m = alpha / sqrt(L * d), on the input
    embeddings of training forwards only. L is a sample's length: in a packed row, the mean length of its
    samples (a shared prefix counted in each), in a padded batch the mean unpadded length, so packing does
    not shrink the noise as a whole-row L would."""
    if "samples" in batch:  # batching.pack_groups: a sample is its contexts and its own tokens
        lengths = [
            sum(c1 - c0 for c0, c1 in batch["contexts"][i]) + batch["segments"][i][1] - batch["segments"][i][0]
            for i in batch["samples"]
        ]
        length = sum(lengths) / max(len(lengths), 1)
    elif "segments" in batch:
        n_shared = int(batch.get("shared_prefix") or 0)
        own = [b - a for a, b in batch["segments"][1 if n_shared else 0 :]]
        length = n_shared + sum(own) / max(len(own), 1)
    elif "attention_mask" in batch:
        length = float(batch["attention_mask"].sum(-1).float().mean())
    else:
        length = embeds.shape[1]
    magnitude = alpha / math.sqrt(max(length, 1.0) * embeds.shape[-1])
    return torch.empty_like(embeds).uniform_(-magnitude, magnitude)


def _fusable(head) -> bool:
    """A bias-free nn.Linear whose weight is frozen (LoRA never adapts the head by default)."""
    return type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad


def _head_chunk(hidden, weight, targets, scale: float, softcap: float, want_grad: bool):
    """log p(target) of each row of the logits `hidden @ weight.T` (scaled, then softcapped:
    logit_transform), in fp32; with `want_grad` also -d(log p)/d(hidden) = (softmax - onehot) @ W.

    On a CPU the vocabulary is walked VOCAB_CHUNK entries at a time with a running max and sum (the
    online softmax): a chunk's logits and its slice of the head stay in the last-level cache between
    the logits matmul, the exponentials and the gradient's matmul, where whole-vocabulary logits
    (83 MB for 424 rows of SmolLM2's 49,152) would be written and re-read from memory five times, and
    no buffer wider than a chunk is ever allocated. Elsewhere the whole vocabulary is one chunk."""
    n, vocab = targets.numel(), weight.shape[0]
    step = VOCAB_CHUNK if hidden.device.type == "cpu" else vocab
    peak = torch.full((n,), float("-inf"), dtype=torch.float32, device=hidden.device)
    total = torch.zeros(n, dtype=torch.float32, device=hidden.device)
    target = torch.empty(n, dtype=torch.float32, device=hidden.device)
    acc = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device) if want_grad else None
    for v0 in range(0, vocab, step):
        w = weight[v0 : v0 + step]
        logits = F.linear(hidden, w).float()
        if scale != 1.0:
            logits.mul_(scale)
        capped = None
        if softcap:
            capped = logits.div_(softcap).tanh_()  # kept: d(cap * tanh(z / cap)) / dz = 1 - tanh^2
            logits = capped * softcap
        here = ((targets >= v0) & (targets < v0 + w.shape[0])).nonzero().squeeze(1)
        target[here] = logits[here, targets[here] - v0]
        new_peak = torch.maximum(peak, logits.amax(1))
        rescale = torch.exp(peak - new_peak)  # what the sums so far are worth against the new max
        logits.sub_(new_peak[:, None]).exp_()
        total.mul_(rescale).add_(logits.sum(1))
        if want_grad:
            if capped is not None:
                logits.mul_(capped.square_().neg_().add_(1.0))
            acc.mul_(rescale[:, None]).add_(logits.to(w.dtype) @ w)
        peak = new_peak
    logp = target - peak - total.log()
    if not want_grad:
        return logp, None
    onehot = weight[targets].float()  # the target's row of the head, times d(cap)/dz at the target
    if softcap:
        onehot.mul_(1.0 - (target / softcap).square()[:, None])
    grad = acc.div_(total[:, None]).sub_(onehot)
    return logp, grad.mul_(scale) if scale != 1.0 else grad


def _head_logprobs(hidden, weight, targets, scale: float = 1.0, softcap: float = 0.0) -> torch.Tensor:
    """_head_chunk's log-probs chunk by chunk, without gradients (a reference pass, an eval loss)."""
    if not targets.numel():
        return hidden.new_zeros(0, dtype=torch.float32)
    return torch.cat(
        [
            _head_chunk(hidden[i : i + CHUNK], weight, targets[i : i + CHUNK], scale, softcap, False)[0]
            for i in range(0, targets.numel(), CHUNK)
        ]
    )


class _FusedHeadLoss(torch.autograd.Function):
    """Summed cross entropy of the logits `hidden @ weight.T` (scaled, then softcapped: logit_transform)
    against `targets`, with d(loss)/d(hidden) computed chunk by chunk in forward; backward only scales
    it. Saves one head matmul per token and never holds more than CHUNK rows of logits."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, scale=1.0, softcap=0.0):
        grad_hidden = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, targets.numel(), CHUNK):
            rows = slice(start, start + CHUNK)
            logp, grad_hidden[rows] = _head_chunk(hidden[rows], weight, targets[rows], scale, softcap, True)
            total -= logp.sum()
        ctx.save_for_backward(grad_hidden)
        ctx.hidden_dtype = hidden.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total):
        (grad_hidden,) = ctx.saved_tensors
        return (grad_hidden * grad_total).to(ctx.hidden_dtype), None, None, None, None


class _FusedHeadLogprobs(torch.autograd.Function):
    """Per-token log p(target) of the logits `hidden @ weight.T` (scaled, softcapped as in _FusedHeadLoss),
    with d(logp_i)/d(hidden_i) = (onehot - softmax) @ W computed chunk by chunk in forward; backward
    scales each row by its token's incoming gradient. Same memory and matmuls as _FusedHeadLoss."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, scale=1.0, softcap=0.0):
        grad_hidden = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device)
        logp = torch.empty(targets.shape, dtype=torch.float32, device=hidden.device)
        for start in range(0, targets.numel(), CHUNK):
            rows = slice(start, start + CHUNK)
            logp[rows], grad = _head_chunk(hidden[rows], weight, targets[rows], scale, softcap, True)
            grad_hidden[rows] = grad.neg_()
        ctx.save_for_backward(grad_hidden)
        ctx.hidden_dtype = hidden.dtype
        return logp

    @staticmethod
    def backward(ctx, grad_logp):
        (grad_hidden,) = ctx.saved_tensors
        return (grad_hidden * grad_logp[:, None]).to(ctx.hidden_dtype), None, None, None, None


class LossModule(torch.nn.Module):
    """The model and lorakit's loss as one forward. summed_loss reads the embeddings and the (often tied)
    LM head outside the model's own forward, so this module, not the model, must be FSDP's root."""

    def __init__(self, model, neftune_alpha: float = 0.0):
        super().__init__()
        self.model = model
        self.neftune_alpha = neftune_alpha

    def forward(self, batch: dict, kind: str = "summed_loss") -> torch.Tensor:
        """kind "summed_loss": summed_loss's sum; "token_logprobs": token_logprobs's per-token values."""
        # noise only in training forwards: never in eval loss, whose model is in eval mode under no_grad
        noisy = self.neftune_alpha and self.model.training and torch.is_grad_enabled()
        compute = token_logprobs if kind == "token_logprobs" else summed_loss
        return compute(self.model, batch, self.neftune_alpha if noisy else 0.0)


@torch.no_grad()
def evaluate_loss(
    model, samples, batch_size, packing, pad_id, device, autocast, share_prefix=False, budget=None
) -> float:
    """Token-mean loss over `samples` (no dropout); `model` is a PEFT model or a `LossModule`. The same
    measure for the loop's eval steps and the eval stage's held-out loss."""
    model = model if isinstance(model, LossModule) else LossModule(model)
    if not _runs_packed_attention(model.model):
        # transformers' own attention masks packed rows correctly only in some models (see
        # lorakit.training.fastpaths): padded batches are exact in all of them
        packing, share_prefix = False, False
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    for mb in batching.micro_batches(samples, batch_size, packing, pad_id, share_prefix, budget):
        mb = batching.to_device(mb, device)
        with autocast:
            total += float(model(mb))
        n += batching.supervised_tokens(mb)
    model.train(was_training)
    return total / max(1, n)


def _runs_packed_attention(model) -> bool:
    from lorakit.training.attention import NAME

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(getattr(base, "config", None), "_attn_implementation", None) == NAME
