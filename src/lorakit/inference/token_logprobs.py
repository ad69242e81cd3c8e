"""Log-probabilities of given tokens: the model's judgement of a text rather than a sample from it.

Used by `Engine.score` (prompts for echo logprobs, answer choices for lm-eval) and by the engine's
generation loop when a request asks for logprobs. Every value is the log-softmax of the raw logits,
before temperature, top-k/top-p or penalties, over the model's whole output row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TokenLogprob:
    """One token and its log-probability under the model (log-softmax of the raw logits, before any
    temperature or penalty), with the likeliest decodable ids at that position, best first."""

    token: int
    logprob: float
    top: list[tuple[int, float]]

    @property
    def greedy(self) -> bool:
        """True when no decodable token was likelier (what a greedy decoder would have picked)."""
        return self.top[0][0] == self.token or self.top[0][1] <= self.logprob


def token_logprob(logits: torch.Tensor, token: int, top: int, vocab_limit: int) -> TokenLogprob:
    """A generated token's log-probability under one row of raw logits, with `top` alternatives."""
    logprobs = logits.float().log_softmax(-1)
    values, alts = logprobs[:vocab_limit].topk(max(top, 1))
    return TokenLogprob(token, float(logprobs[token]), list(zip(alts.tolist(), values.tolist())))


def score_rows(model, rows: list[list[int]], last: list[int], top: int, vocab_limit: int) -> list[list[TokenLogprob]]:
    """One forward pass over left-padded rows, keeping the logits of the last max(last) + 1 positions only.

    Positions count real tokens only, so a padded row is scored as it would be alone. Alternatives
    are drawn from the first `vocab_limit` ids (those the tokenizer can decode).
    """
    device = next(model.parameters()).device
    width = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (width - len(r)) + list(r) for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, logits_to_keep=max(last) + 1
    ).logits
    out = []
    for b, (row, n) in enumerate(zip(rows, last)):
        if n == 0:
            out.append([])
            continue
        # Position p's logits predict token p + 1: the last n tokens come from positions -n-1 .. -2.
        logprobs = logits[b, -n - 1 : -1].float().log_softmax(-1)
        targets = torch.tensor(row[-n:], device=device)
        chosen = logprobs.gather(-1, targets[:, None])[:, 0].tolist()
        values, alts = logprobs[:, :vocab_limit].topk(max(top, 1), dim=-1)
        out.append(
            [
                TokenLogprob(t, lp, list(zip(a, v)))
                for t, lp, a, v in zip(row[-n:], chosen, alts.tolist(), values.tolist())
            ]
        )
    return out
