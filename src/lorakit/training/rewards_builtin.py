"""Built-in reward factories for the common cases: a format check, a numeric answer, a length penalty.

Each is a factory: the config gives its settings under `args` and gets back a reward function with
TRL's signature (see `lorakit.training.rewards`). Each function carries `full_score`, the best value it
can give, and `numeric_answer`'s also `checks_answer`: `lorakit eval` calls a completion right when its
answer checks are at full score (lorakit.eval.rewards).

    train:
      rewards:
        - {function: "lorakit.training.rewards_builtin:regex_match", args: {pattern: "<answer>.*</answer>"}}
        - {function: "lorakit.training.rewards_builtin:numeric_answer", args: {column: answer, tolerance: 0.01}}
        - {function: "lorakit.training.rewards_builtin:length_penalty", args: {target: 200}, weight: 0.1}
"""

from __future__ import annotations

import math
import re

NUMBER = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"


def completion_text(completion) -> str:
    """The text of one completion as TRL passes it: a string, or a list of messages (the last one's content)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    raise TypeError(f"a completion is a string or a list of messages, not {type(completion).__name__}")


def parse_number(text) -> float | None:
    """A number written as text ("1,234", "-3.5", "7") -> float; None if it is not one."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    try:
        value = float(str(text).strip().replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def regex_match(pattern: str, reward: float = 1.0, penalty: float = 0.0, full: bool = False, dotall: bool = True):
    """`reward` when the completion matches `pattern` (anywhere, or the whole text with `full`), else `penalty`."""
    compiled = re.compile(pattern, re.DOTALL if dotall else 0)
    test = compiled.fullmatch if full else compiled.search

    def format_match(completions, **_):
        return [
            reward if test(completion_text(c).strip() if full else completion_text(c)) else penalty for c in completions
        ]

    format_match.full_score = max(reward, penalty)
    return format_match


def numeric_answer(
    column: str = "answer",
    pattern: str | None = None,
    tolerance: float = 0.0,
    relative: bool = False,
    reward: float = 1.0,
    penalty: float = 0.0,
):
    """`reward` when the completion's answer equals the number in `column` within `tolerance`, else `penalty`.

    The answer is group 1 of `pattern` when given (e.g. "<answer>(.*?)</answer>"), otherwise the last
    number in the text. `relative` makes the tolerance a share of the reference's magnitude. A row whose
    reference is not a number gets None (this reward does not apply to it).
    """
    compiled = re.compile(pattern, re.DOTALL) if pattern else None

    def numeric_match(completions, **columns):
        if column not in columns:
            raise KeyError(f"no column {column!r} in the data (columns: {', '.join(sorted(columns)) or 'none'})")
        out = []
        for completion, reference in zip(completions, columns[column]):
            target = parse_number(reference)
            if target is None:
                out.append(None)
                continue
            got = _extract(completion_text(completion), compiled)
            limit = tolerance * abs(target) if relative else tolerance
            out.append(reward if got is not None and abs(got - target) <= limit else penalty)
        return out

    numeric_match.full_score, numeric_match.checks_answer = max(reward, penalty), True
    return numeric_match


def length_penalty(target: int, scale: float = 1.0):
    """0 up to `target` completion tokens, then -scale per `target` tokens beyond it (linear)."""
    if target < 1:
        raise ValueError("target must be >= 1")

    def length(completions, completion_ids=None, **_):
        if completion_ids is None:
            raise ValueError("length_penalty needs completion_ids")
        return [-scale * max(0, len(ids) - target) / target for ids in completion_ids]

    length.full_score = 0.0
    return length


def _extract(text: str, pattern: re.Pattern | None) -> float | None:
    if pattern is not None:
        found = pattern.search(text)
        if not found:
            return None
        text = found.group(1) if pattern.groups else found.group(0)
    numbers = re.findall(NUMBER, text)
    return parse_number(numbers[-1]) if numbers else None
