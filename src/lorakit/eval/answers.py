"""The eval's answers phase: the base model (adapter off) and the fine-tune answer the same questions.

Side-by-side prompts greedy and sampled, identity questions for the persona score and general
questions for retention, all through `Engine.answer_batch` with the run's thinking setting (ask the
way the model was trained: thinking off renders the template's empty think block).
"""

from __future__ import annotations

import json
from dataclasses import replace

from lorakit.eval.prompts import Prompt

SAMPLED = {"temperature": 0.7, "top_p": 0.9}
# Retention answers are graded on keywords that come in the first sentence; a short budget keeps
# 2 x 24 answers cheap.
RETENTION_MAX_TOKENS = 24


def answer_all(
    engine,
    thinking: str,
    asked: list[Prompt],
    identity: list[Prompt],
    general: list[Prompt],
    max_new_tokens: int,
    seed: int,
    adapter: str,
) -> tuple[dict, int]:
    """{"base" | "finetuned": {"greedy", "sampled", "identity", "general": answer texts}} and the number
    of completion tokens generated. General questions get at most RETENTION_MAX_TOKENS."""
    gen = Answerer(engine, thinking, max_new_tokens, seed)
    gen.start_progress(2 * (2 * len(asked) + len(identity) + len(general)))
    budget = retention_budget(max_new_tokens)
    # All base answers first, then all fine-tuned ones: each phase is one adapter setting, and one
    # batched engine call per kind of question.
    got = {
        side: {
            "greedy": gen.ask_many(asked, name),
            "sampled": gen.ask_many(asked, name, sampled=True),
            "identity": gen.ask_many(identity, name),
            "general": gen.ask_many(general, name, budget),
        }
        for side, name in (("base", None), ("finetuned", adapter))
    }
    gen.close()
    return got, gen.tokens


def retention_budget(max_new_tokens: int) -> int:
    return min(max_new_tokens, RETENTION_MAX_TOKENS)


def side_by_side(asked: list[Prompt], got: dict) -> list[dict]:
    """eval.json's "answers": each prompt with both models' greedy and sampled answers."""
    return [
        {
            "prompt": p.text,
            "reference": p.reference,
            "base": {m: got["base"][m][i] for m in ("greedy", "sampled")},
            "finetuned": {m: got["finetuned"][m][i] for m in ("greedy", "sampled")},
        }
        for i, p in enumerate(asked)
    ]


class Answerer:
    """Asks the engine, base (adapter None) or fine-tuned; identical requests are answered once."""

    def __init__(self, engine, thinking: str, max_new_tokens: int, seed: int):
        from lorakit.inference.engine import SamplingParams

        self.engine, self.thinking = engine, thinking
        self.greedy = SamplingParams(temperature=0, max_new_tokens=max_new_tokens)
        self.sampled = SamplingParams(max_new_tokens=max_new_tokens, seed=seed, **SAMPLED)
        self.memo: dict[tuple, str] = {}
        self.bar = None
        self.tokens = 0  # completion tokens generated, for the tokens/s line in the timing

    def start_progress(self, total: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="eval answers", unit="answer", dynamic_ncols=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def ask_many(
        self, prompts: list[Prompt], adapter: str | None, max_new_tokens: int | None = None, sampled: bool = False
    ) -> list[str]:
        """Answer texts (reasoning split off) of one model to several prompts, with one setting.

        Prompts not answered before go to the engine in one batched call; identical requests are
        generated once.
        """
        params = self.sampled if sampled else self.greedy
        if max_new_tokens:
            params = replace(params, max_new_tokens=max_new_tokens)
        keys = [
            (
                json.dumps(p.messages, ensure_ascii=False),
                adapter,
                params.temperature,
                params.seed,
                params.max_new_tokens,
            )
            for p in prompts
        ]
        todo = {key: p.messages for key, p in zip(keys, prompts) if key not in self.memo}
        if todo:
            from lorakit.inference.engine import PromptTooLong

            try:
                done = self.engine.answer_batch(list(todo.values()), params, adapter, self.thinking)
            except PromptTooLong:  # some prompt does not fit the context: one at a time, to tell which
                done = [self._one(messages, params, adapter) for messages in todo.values()]
            for key, answer in zip(todo, done):
                self.memo[key] = answer if isinstance(answer, str) else self._text(answer)
        if self.bar is not None:
            self.bar.update(len(prompts))
        return [self.memo[key] for key in keys]

    def _one(self, messages: list[dict], params, adapter: str | None):
        """One prompt's Answer, or the note for its answer cell when it does not fit the context."""
        from lorakit.inference.engine import PromptTooLong

        try:
            return self.engine.answer(messages, params, adapter, self.thinking)
        except PromptTooLong as e:
            return f"[not generated: {e}]"

    def _text(self, answer) -> str:
        self.tokens += answer.completion_tokens
        return answer.text.strip()
