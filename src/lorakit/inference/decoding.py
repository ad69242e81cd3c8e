"""Token-level decoding, shared by every generation path: how the next token is picked
(`SamplingParams`, `Sampler`), how tokens become text without splitting a character (`Detokenizer`),
and where text must stop (`StopMatcher`). `lorakit.inference.engine.Engine` drives them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch


class TokenMask(Protocol):
    """One row's constraint on the next token (constrained decoding, banned tokens).

    `apply` sets the logits of forbidden tokens to -inf in place, before penalties and sampling;
    `accept` is told the token that was picked. `lorakit.inference.constrained` has the grammar one.
    """

    def apply(self, logits: torch.Tensor) -> None: ...

    def accept(self, token: int) -> None: ...


@dataclass
class SamplingParams:
    """How tokens are picked. temperature 0 = greedy; top_k 0 and top_p 1 switch those filters off.

    presence/frequency penalties follow OpenAI (subtracted from logits, counted over generated
    tokens); repetition_penalty follows Hugging Face (divides positive logits of any token already
    seen in prompt or output).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    # Makes a fresh TokenMask for each row generated with these params (None: every token allowed).
    token_mask: Callable[[], TokenMask] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        problems = [
            (self.temperature < 0, "temperature must be >= 0"),
            (not 0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k < 0, "top_k must be >= 0 (0 = off)"),
            (self.max_new_tokens < 1, "max_new_tokens must be >= 1"),
            (not -2 <= self.presence_penalty <= 2, "presence_penalty must be in [-2, 2]"),
            (not -2 <= self.frequency_penalty <= 2, "frequency_penalty must be in [-2, 2]"),
            (self.repetition_penalty <= 0, "repetition_penalty must be > 0"),
        ]
        for bad, message in problems:
            if bad:
                raise ValueError(message)
        self.stop = [s for s in self.stop if s]


class Sampler:
    """Penalties, temperature, top-k and top-p over one logits row; seeded per request."""

    def __init__(self, params: SamplingParams, prompt_ids: list[int], vocab_limit: int, device):
        self.p = params
        self.vocab_limit = vocab_limit
        self.prompt_ids = prompt_ids
        self.mask = params.token_mask() if params.token_mask is not None else None
        self.counts: torch.Tensor | None = None  # generated-token counts, sized on first logits
        self.seen: torch.Tensor | None = None
        self.rng = torch.Generator(device=device)
        if params.seed is None:
            self.rng.seed()
        else:
            self.rng.manual_seed(params.seed % 2**64)  # any int (negative, huge) is a valid seed

    def pick(self, logits: torch.Tensor) -> int:
        """Choose the next token id from one row of logits."""
        logits = logits.float().clone()
        if self.counts is None:
            self.counts = torch.zeros_like(logits)
            self.seen = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
            self.seen[torch.tensor(self.prompt_ids, device=logits.device).clamp(max=logits.shape[-1] - 1)] = True
        logits[self.vocab_limit :] = float("-inf")
        if self.mask is not None:
            self.mask.apply(logits)
        p = self.p
        if p.repetition_penalty != 1.0:
            picked = logits[self.seen]
            logits[self.seen] = torch.where(picked > 0, picked / p.repetition_penalty, picked * p.repetition_penalty)
        if p.frequency_penalty or p.presence_penalty:
            logits -= p.frequency_penalty * self.counts + p.presence_penalty * (self.counts > 0).float()
        if p.temperature < 1e-5:  # dividing by a near-zero temperature overflows; it means greedy anyway
            token = int(torch.argmax(logits))
        else:
            token = self._sample(logits / p.temperature)
        self.counts[token] += 1
        self.seen[token] = True
        if self.mask is not None:
            self.mask.accept(token)
        return token

    def _sample(self, logits: torch.Tensor) -> int:
        probs = torch.softmax(logits, dim=-1)
        vocab = probs.numel()
        k = self.p.top_k if 0 < self.p.top_k < vocab else vocab
        top_p = self.p.top_p
        ids = None
        if k < vocab or top_p < 1.0:
            mass = float(torch.topk(probs, k).values.sum()) if k < vocab and top_p < 1.0 else 1.0
            # The nucleus is usually a few tokens: widen a top-k window until it holds top_p of the
            # mass instead of sorting all 150k logits (a full sort per token is slow on CPU).
            window = k if top_p >= 1.0 else min(k, 64)
            probs, ids = torch.topk(probs, window)
            while window < k and float(probs.sum()) < top_p * mass:
                window = min(k, window * 8)
                probs, ids = torch.topk(torch.softmax(logits, dim=-1), window)
            if top_p < 1.0:
                # Keep a token while the tokens before it cover less than top_p; the first always stays.
                keep = (torch.cumsum(probs, dim=0) - probs) < top_p * mass
                keep[0] = True  # also when top_p * mass underflows to 0
                probs, ids = probs[keep], ids[keep]
        # Inverse-CDF draw: as exact as torch.multinomial and much cheaper over a large vocabulary.
        cdf = torch.cumsum(probs, dim=0)
        u = torch.rand(1, generator=self.rng, device=cdf.device) * cdf[-1]
        pos = int(torch.searchsorted(cdf, u).clamp(max=cdf.numel() - 1))
        return int(ids[pos]) if ids is not None else pos


class Detokenizer:
    """Turns token ids into text deltas without splitting multi-byte characters.

    Decodes a short window (the last few emitted tokens plus the new ones) rather than everything,
    so each step costs the same; the window's first tokens give context for tokenizers whose decode
    of a lone token differs (leading spaces in SentencePiece).
    """

    def __init__(self, decode):
        self._decode = decode
        self.ids: list[int] = []
        self.start = 0  # first id of the decode window
        self.done = 0  # ids[:done] are already turned into text

    def push(self, token: int) -> str:
        """Add one token; return the new text that is now certain (maybe "")."""
        self.ids.append(token)
        before = self._decode(self.ids[self.start : self.done])
        now = self._decode(self.ids[self.start :])
        # U+FFFD at the end means a character's bytes are still incomplete: wait for more tokens.
        if len(now) <= len(before) or now.endswith("\ufffd"):
            return ""
        self.start, self.done = self.done, len(self.ids)
        return now[len(before) :]

    def flush(self) -> str:
        """Whatever is still held back, less a character cut off by the end of generation."""
        before = self._decode(self.ids[self.start : self.done])
        now = self._decode(self.ids[self.start :])
        self.start = self.done = len(self.ids)
        return now[len(before) :].rstrip("\ufffd") if len(now) > len(before) else ""


class StopMatcher:
    """Cuts text at the first stop string, holding back any tail that could begin one."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.hit = False

    def feed(self, text: str) -> tuple[str, bool]:
        """Return (text safe to show, whether a stop string was reached)."""
        buf = self.pending + text
        if not self.stops:
            self.pending = ""
            return buf, False
        found = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if found:
            self.pending, self.hit = "", True
            return buf[: min(found)], True
        keep = 0
        for k in range(min(len(buf), max(map(len, self.stops)) - 1), 0, -1):
            if any(s.startswith(buf[-k:]) for s in self.stops):
                keep = k
                break
        self.pending = buf[len(buf) - keep :]
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out
