"""Reward loading, calling and checking (lorakit.training.rewards) and the built-in rewards."""

import math
import re

import pytest
import torch

from lorakit.errors import LorakitError
from lorakit.training import rewards as R
from lorakit.training import rewards_builtin as B

BUILTIN = "lorakit.training.rewards_builtin"
CHAT = [[{"role": "user", "content": "2+2?"}]] * 2


def _completions(*texts):
    return [[{"role": "assistant", "content": t}] for t in texts]


def test_a_file_beside_the_config_runs_a_tutorial_function_unchanged(tmp_path):
    # TRL-style function: reads message content, takes the `answer` column and **kwargs.
    (tmp_path / "my_rewards.py").write_text(
        "def check(prompts, completions, answer, **kwargs):\n"
        "    return [2.0 if c[0]['content'].strip() == a else -1.0 for c, a in zip(completions, answer)]\n"
    )
    rewards = R.load_rewards(["my_rewards.py:check"], tmp_path)
    scores = R.score(rewards, CHAT, _completions("4", "5"), [[1], [2]], {"answer": ["4", "4"]})
    assert scores.total.tolist() == [2.0, -1.0]
    assert scores.metrics()["rewards/check/mean"] == 0.5


def test_weights_combine_and_each_function_is_reported_apart():
    rewards = R.load_rewards(
        [
            {"function": f"{BUILTIN}:regex_match", "args": {"pattern": r"<a>.*</a>"}},
            {
                "function": f"{BUILTIN}:numeric_answer",
                "weight": 2.0,
                "args": {"column": "answer", "pattern": "<a>(.*)</a>"},
            },
        ]
    )
    scores = R.score(
        rewards, CHAT + CHAT, _completions("<a>4</a>", "<a>5</a>", "4", "x"), [[1]] * 4, {"answer": ["4"] * 4}
    )
    assert scores.names == ["format_match", "numeric_match"]
    assert scores.total.tolist() == [3.0, 1.0, 0.0, 0.0]
    m = scores.metrics()
    assert m["rewards/format_match/mean"] == 0.5 and m["rewards/numeric_match/mean"] == 0.25
    assert m["reward"] == 1.0 and math.isclose(m["reward_std"], float(torch.tensor([3.0, 1, 0, 0]).std()))


def test_none_is_left_out_as_trl_does():
    def half(completions, **_):
        return [1.0, None]

    def none(completions, **_):
        return [None, None]

    scores = R.score([R.Reward("half", half), R.Reward("none", none)], CHAT, _completions("a", "b"), [[1], [2]], {})
    assert scores.total[0] == 1.0 and math.isnan(scores.total[1])  # no function scored sample 1
    assert scores.metrics()["rewards/half/mean"] == 1.0 and math.isnan(scores.metrics()["rewards/none/mean"])


@pytest.mark.parametrize(
    "body, message",
    [
        ("raise ValueError('bad parse')", "reward broken raised ValueError: bad parse on sample 1"),
        ("return [1.0]", "reward broken returned 1 values for 2 completions"),
        ("return [1.0, 'x']", "reward broken returned 'x' for sample 1"),
        ("return [1.0, float('nan')]", "reward broken returned nan for sample 1"),
        ("return 3", "reward broken returned int, expected a list of 2 numbers"),
    ],
)
def test_a_broken_reward_is_one_line_naming_function_and_sample(body, message):
    namespace = {}
    exec(
        "def broken(completions, **_):\n"
        "    if len(completions) == 1 and completions[0][0]['content'] == 'a':\n"
        "        return [1.0]\n"
        f"    {body}\n",
        namespace,
    )
    with pytest.raises(LorakitError) as e:
        R.score([R.Reward("broken", namespace["broken"])], CHAT, _completions("a", "b"), [[1], [2]], {})
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "entry, message",
    [
        ("nomodule_xyz:f", "train.rewards[0]: cannot import nomodule_xyz"),
        (f"{BUILTIN}:nope", "has no function 'nope'"),
        ("missing.py:f", "reward file"),
        ("just_a_name", "is not 'module:function'"),
        ({"function": f"{BUILTIN}:regex_match", "args": {"patern": "x"}}, "does not take these arguments"),
        ({"function": f"{BUILTIN}:regex_match", "weight": "high"}, "train.rewards[0].weight"),
    ],
)
def test_bad_entries_are_refused_before_training(tmp_path, entry, message):
    with pytest.raises(LorakitError, match=re.escape(message)):
        R.load_rewards([entry], tmp_path)


def test_builtins():
    text = _completions("so <answer> 1,234 </answer>", "<answer>12.5</answer>", "no answer 7")
    numeric = B.numeric_answer("answer", pattern=r"<answer>(.*?)</answer>")
    assert numeric(text, answer=["1234", "12.4", "7"]) == [1.0, 0.0, 0.0]
    assert B.numeric_answer("answer", tolerance=0.01, relative=True)(text, answer=[1234, 12.4, "n/a"]) == [
        1.0,
        1.0,
        None,
    ]
    assert B.regex_match(r"<answer>.*</answer>", penalty=-1.0)(text) == [1.0, 1.0, -1.0]
    assert B.regex_match(r"<answer>.*</answer>", full=True)(["<answer>3</answer>", "x <answer>3</answer>"]) == [
        1.0,
        0.0,
    ]
    assert B.length_penalty(target=4, scale=2.0)(text, completion_ids=[[0] * 4, [0] * 6, [0] * 12]) == [0.0, -1.0, -4.0]
