"""The arithmetic of a GRPO run's eval (lorakit.eval.rewards) on hand-made completions: which completions
are right, greedy accuracy, pass@k, and each function's full score, with the real built-in rewards."""

from __future__ import annotations

import math

import pytest

from lorakit.eval import rewards as R
from lorakit.training.rewards import Reward, load_rewards, score

BUILTIN = "lorakit.training.rewards_builtin"
CONFIG = [
    {"function": f"{BUILTIN}:regex_match", "weight": 0.5, "args": {"pattern": r"The answer is -?\d+"}},
    {"function": f"{BUILTIN}:numeric_answer", "args": {"column": "answer", "pattern": r"The answer is\s*(-?\d+)"}},
]


def scored(completions: list[str], answers: list[str], config=CONFIG):
    rewards = load_rewards(config)
    return rewards, score(rewards, ["q"] * len(completions), completions, [[1]] * len(completions), {"answer": answers})


def test_greedy_accuracy_counts_answer_checks_at_full_score():
    rewards, s = scored(
        ["3 + 4 = 7. The answer is 7.", "The answer is 8.", "It is 9.", "The answer is 10"],
        ["7", "7", "9", "10"],
    )
    full, observed = R.full_scores(rewards, [s.per_function])
    assert full == [1.0, 1.0] and observed == [False, False]  # declared by the built-ins
    checks = R.answer_checks(rewards)
    assert checks == [1]  # numeric_answer checks the answer; the format does not count
    g = R.greedy_summary(s, full, checks)
    assert g["solved"] == 2 and g["accuracy"] == 0.5  # the 1st and 4th; the 3rd is right but unstated
    assert g["reward"] == pytest.approx((1.5 + 0.5 + 0 + 1.5) / 4)
    assert g["per_function"]["format_match"] == {"mean": 0.75, "at_full": 0.75}
    assert g["per_function"]["numeric_match"] == {"mean": 0.5, "at_full": 0.5}


def test_pass_at_k_is_any_of_the_groups_k_samples():
    # 3 prompts x k=3: prompt 0 right once, prompt 1 never, prompt 2 every time
    completions = [
        "The answer is 1",
        "The answer is 2",
        "The answer is 5",
        "The answer is 4",
        "no idea",
        "The answer is 3",
        "The answer is 6",
        "The answer is 6",
        "The answer is 6",
    ]
    answers = ["5"] * 3 + ["7"] * 3 + ["6"] * 3
    rewards, s = scored(completions, answers)
    full, _ = R.full_scores(rewards, [s.per_function])
    out = R.sampled_summary(s, full, 3, R.answer_checks(rewards))
    assert out["passed"] == 2 and out["pass_at_k"] == pytest.approx(2 / 3)
    assert out["sample_accuracy"] == pytest.approx(4 / 9)
    assert out["reward"] == pytest.approx((8 * 0.5 + 4 * 1.0) / 9)


def test_none_does_not_apply_and_unmarked_functions_all_count():
    # A function without full_score or checks_answer: full = the highest value seen, and every
    # function counts for "right" when none checks the answer.
    def graded(completions, **_):
        return [{"a": 2.0, "b": 1.0, "c": None}[c] for c in completions]

    def length(completions, **_):
        return [0.0 if c != "b" else -1.0 for c in completions]

    rewards = [Reward("graded", graded), Reward("length", length)]
    s = score(rewards, ["q"] * 3, ["a", "b", "c"], [[1]] * 3, {})
    full, observed = R.full_scores(rewards, [s.per_function])
    assert full == [2.0, 0.0] and observed == [True, True]
    checks = R.answer_checks(rewards)
    assert checks == [0, 1]
    # "a": both at full; "b": neither; "c": graded does not apply, length is at full -> right
    assert R.solved(s.per_function, full, checks).tolist() == [True, False, True]
    g = R.greedy_summary(s, full, checks)
    assert g["per_function"]["graded"] == {"mean": 1.5, "at_full": 0.5}


def test_a_completion_no_check_scores_is_not_right():
    def never(completions, **_):
        return [None] * len(completions)

    never.checks_answer = True
    rewards = [Reward("never", never)]
    s = score(rewards, ["q"], ["x"], [[1]], {})
    full, _ = R.full_scores(rewards, [s.per_function])
    assert math.isnan(full[0])
    assert R.solved(s.per_function, full, [0]).tolist() == [False]
    assert R.greedy_summary(s, full, [0])["reward"] is None


def test_the_tutorials_functions_declare_their_best_score():
    from lorakit.training import rewards_math as M

    assert (M.format_exact.full_score, M.format_approximate.full_score) == (3.0, 1.5)
    assert (M.answer_check.full_score, M.number_check.full_score) == (5.0, 3.5)
    assert M.answer_check.checks_answer and M.number_check.checks_answer
    assert not getattr(M.format_exact, "checks_answer", False)
    # the best score is reachable: a completion in the full format with the exact answer gets all four
    text = f"work{M.REASONING_END}{M.SOLUTION_START}42{M.SOLUTION_END}"
    got = [f(prompts=["q"], completions=[text], answer=["42"])[0] for f in (M.format_exact, M.answer_check)]
    assert got == [3.0, 5.0]
    assert M.format_approximate([text])[0] == 1.5 and M.number_check(["q"], [text], ["42"])[0] == 3.5
