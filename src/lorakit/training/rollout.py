"""GRPO rollouts on the model being trained: `num_generations` sampled completions per prompt, from the
current adapter, through lorakit's own batched generation core (lorakit.inference.engine).

The engine wraps the training PeftModel in place (no copy): for the rollout the model goes to eval
mode and, if training switched it to packed attention (which refuses padding masks and KV caches),
back to the attention it was loaded with; both are restored afterwards.

Every completion is sampled with its own seed, drawn from one generator the rollout owns. That
generator's state is all the randomness a rollout has, so it goes into the checkpoint
(`state_dict`) and a resumed run samples exactly what the uninterrupted run sampled.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from lorakit.inference import completion as engine_rows
from lorakit.inference.decoding import SamplingParams
from lorakit.inference.engine import BATCH_ROWS, Engine

SEED_RANGE = 2**62


@dataclass
class RolloutSettings:
    """What `train.` says about sampling; temperature 0 is greedy (every completion of a group equal)."""

    num_generations: int = 4
    max_completion_length: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0


@dataclass
class Completion:
    """One sampled completion. `completion_ids` ends with the end-of-sequence token when the model
    stopped (TRL keeps it: its log-probability is trained too); `truncated` when the length ran out."""

    group: int  # index of its prompt in the batch
    prompt_ids: list[int]
    completion_ids: list[int]
    text: str
    truncated: bool


class Rollout:
    """Samples completions from `model` (a PeftModel in training) with the adapter as it is now."""

    def __init__(self, model, tokenizer, settings: RolloutSettings, seed: int):
        was_training = model.training
        self.engine = Engine(model, tokenizer)  # puts the model in eval mode; undone at once
        model.train(was_training)
        self.model, self.settings = model, settings
        self.rng = torch.Generator().manual_seed(seed)

    def prompt_ids(self, prompt, enable_thinking: bool | None = None) -> list[int]:
        """Token ids of a prompt as TRL renders it: chat messages through the chat template with the
        generation prompt, or plain text with the tokenizer's special tokens."""
        if isinstance(prompt, str):
            return self.engine.encode(prompt)
        return self.engine.chat_prompt(prompt, enable_thinking=enable_thinking)

    def generate(
        self, prompts: list[list[int]], progress: Callable[[int, int], None] | None = None
    ) -> list[Completion]:
        """`num_generations` completions per prompt, grouped: completions of prompt i are at
        i * num_generations ... (i + 1) * num_generations - 1. `progress(done, total)` is called as
        batches of completions finish."""
        s = self.settings
        jobs = [(group, ids) for group, ids in enumerate(prompts) for _ in range(s.num_generations)]
        seeds = torch.randint(0, SEED_RANGE, (len(jobs),), generator=self.rng).tolist()
        engine, rows = self.engine, []
        with generation_mode(self.model), engine.lock, torch.inference_mode():
            # Completions of one prompt share a forward pass: equal lengths, no left padding.
            for start in range(0, len(jobs), BATCH_ROWS):
                part = [
                    engine_rows.Completion(engine, list(ids), self._params(seed), self._budget(ids))
                    for (_, ids), seed in zip(jobs[start : start + BATCH_ROWS], seeds[start : start + BATCH_ROWS])
                ]
                engine._decode_rows(part)
                rows += part
                if progress:
                    progress(len(rows), len(jobs))
        return [
            Completion(group, list(ids), row.tokens, engine.decode(row.tokens), row.finish != "stop")
            for (group, ids), row in zip(jobs, rows)
        ]

    def _params(self, seed: int) -> SamplingParams:
        s = self.settings
        return SamplingParams(
            temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_new_tokens=s.max_completion_length, seed=seed
        )

    def _budget(self, ids: list[int]) -> int:
        room = self.engine.max_context - len(ids)
        if room < 1:
            raise ValueError(f"a prompt has {len(ids)} tokens; the context holds {self.engine.max_context}")
        return min(self.settings.max_completion_length, room)

    def state_dict(self) -> dict:
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.set_state(state["rng"])


@contextlib.contextmanager
def generation_mode(model):
    """Eval mode and a KV-cache-capable attention for generating; the training setup restored after."""
    from lorakit.training.attention import NAME as PACKED

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    was_training = model.training
    attention = getattr(base.config, "_attn_implementation", None)
    model.eval()
    if attention == PACKED:
        base.set_attn_implementation("sdpa")
    try:
        yield
    finally:
        if attention == PACKED:
            base.set_attn_implementation(PACKED)
        model.train(was_training)
