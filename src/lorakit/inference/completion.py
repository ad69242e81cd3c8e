"""One completion as it is generated: its text so far, stop handling, finish reason and counts, and
the `Chunk`s that carry its text out of `lorakit.inference.engine.Engine`."""

from __future__ import annotations

from dataclasses import dataclass

from lorakit.inference.decoding import Detokenizer, Sampler, SamplingParams, StopMatcher
from lorakit.inference.token_logprobs import TokenLogprob


@dataclass
class Chunk:
    """A piece of a completion. `finish_reason` ("stop" or "length") is set on the last chunk only.

    `logprobs` (only when asked for) covers the tokens generated since the previous chunk, the end
    of sequence token included; a chunk's text may hold back part of them. `token_ids` (the last chunk
    only) lists every generated id, the end-of-sequence token included, as vLLM's `return_token_ids` does.
    """

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: list[TokenLogprob] | None = None
    token_ids: list[int] | None = None


class Completion:
    """One completion in progress: its sampler, text so far, stop handling, finish reason and counts.

    `engine` gives the end-of-sequence ids, the decodable vocabulary, the device and `decode`.
    """

    def __init__(self, engine, prompt_ids: list[int], params: SamplingParams, budget: int):
        self.prompt_ids, self.budget, self.eos_ids = prompt_ids, budget, engine.eos_ids
        self.sampler = Sampler(params, prompt_ids, engine.vocab_limit, engine.device)
        self.detok = Detokenizer(engine.decode)
        self.stops = StopMatcher(params.stop)
        self.produced = 0
        self.finish: str | None = None  # set once the row is over: "stop" or "length"
        self.parts: list[str] = []
        self.tokens: list[int] = []  # every id taken, for callers that train on or return token ids

    def take(self, token: int) -> str:
        """Add one generated token; return the text that became safe to show (maybe "")."""
        self.produced += 1
        self.tokens.append(token)
        text = ""
        if token in self.eos_ids:
            self.finish = "stop"
        else:
            text, hit = self.stops.feed(self.detok.push(token))
            self.finish = "stop" if hit else "length" if self.produced >= self.budget else None
        self.parts.append(text)
        return text

    def tail(self) -> str:
        """The text still held back once the row is over; may turn a "length" finish into "stop"."""
        self.finish = self.finish or "length"
        if self.stops.hit:
            return ""
        # Text held back for a multi-byte character or a possible stop string is final now.
        tail, hit = self.stops.feed(self.detok.flush())
        if hit:
            self.finish = "stop"
            return tail
        return tail + self.stops.flush()

    def chunk(self) -> Chunk:
        """The whole completion (call once the row is over)."""
        tail = self.tail()
        return Chunk("".join(self.parts) + tail, self.finish, len(self.prompt_ids), self.produced, None, self.tokens)
