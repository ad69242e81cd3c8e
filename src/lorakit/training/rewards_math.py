"""The Qwen3 GRPO tutorial's four reward functions, written for lorakit (configs/qwen3-grpo-math.yaml).

The tutorial first teaches a format by SFT: reasoning between REASONING_START and REASONING_END, then
the solution between SOLUTION_START and SOLUTION_END. GRPO then scores each completion four ways:
  - format_exact: the whole completion has the format (reasoning closed, one solution block);
  - format_approximate: each marker that appears exactly once earns a little, a missing or
    repeated one costs a little, so a half-right format still gets a gradient;
  - answer_check: the solution block against the `answer` column, exact or close in ratio;
  - number_check: the first number in the solution block against the answer, as numbers.
Scores are the tutorial's magnitudes; the functions have TRL's signature, so they also run in TRL.
"""

from __future__ import annotations

import re

from lorakit.training.rewards_builtin import completion_text, parse_number

REASONING_START = "<start_working_out>"
REASONING_END = "<end_working_out>"
SOLUTION_START = "<SOLUTION>"
SOLUTION_END = "</SOLUTION>"

# The template opens the reasoning itself, so a completion starts inside it: the format is "reasoning,
# REASONING_END, anything, SOLUTION_START answer SOLUTION_END", and only whitespace around it.
_FORMAT = re.compile(
    rf"{re.escape(REASONING_END)}.*?{re.escape(SOLUTION_START)}(.+?){re.escape(SOLUTION_END)}"
    r"\s*$",
    re.DOTALL,
)
_NUMBER = re.compile(rf"{re.escape(SOLUTION_START)}.*?(-?[\d\.,]+)", re.DOTALL)


def format_exact(completions, **_) -> list[float]:
    """3.0 when the completion has the whole format, else 0."""
    return [3.0 if _FORMAT.search(completion_text(c)) else 0.0 for c in completions]


def format_approximate(completions, **_) -> list[float]:
    """+0.5 for each of the three closing markers present exactly once, -1.0 for each that is not."""
    scores = []
    for c in completions:
        text = completion_text(c)
        scores.append(sum(0.5 if text.count(m) == 1 else -1.0 for m in (REASONING_END, SOLUTION_START, SOLUTION_END)))
    return scores


def answer_check(prompts, completions, answer, **_) -> list[float]:
    """5.0 for the exact answer, 3.5 for it with surrounding spaces, 2.0 within 10% and 1.5 within 20% by
    ratio, -2.5 when wrong, -4.5 when the solution is not a number, -2.0 without a solution block."""
    scores = []
    for c, truth in zip(completions, answer):
        found = _FORMAT.search(completion_text(c))
        if found is None:
            scores.append(-2.0)
            continue
        guess, truth = found.group(1), str(truth)
        if guess == truth:
            scores.append(5.0)
        elif guess.strip() == truth.strip():
            scores.append(3.5)
        else:
            g, t = parse_number(guess), parse_number(truth)
            if g is None or t is None or t == 0:
                scores.append(-4.5)
                continue
            ratio = g / t
            scores.append(2.0 if 0.9 <= ratio <= 1.1 else 1.5 if 0.8 <= ratio <= 1.2 else -2.5)
    return scores


def number_check(prompts, completions, answer, **_) -> list[float]:
    """3.5 when the first number after SOLUTION_START equals the answer, -1.5 when not, -2.5 without one."""
    scores = []
    for c, truth in zip(completions, answer):
        found = _NUMBER.search(completion_text(c))
        guess = parse_number(found.group(1)) if found else None
        if guess is None:
            scores.append(-2.5)
            continue
        t = parse_number(truth)
        scores.append(3.5 if t is not None and guess == t else -1.5)
    return scores


# The best score of each, and which check the answer, for `lorakit eval`'s accuracy (lorakit.eval.rewards).
format_exact.full_score = 3.0
format_approximate.full_score = 1.5
answer_check.full_score, answer_check.checks_answer = 5.0, True
number_check.full_score, number_check.checks_answer = 3.5, True
