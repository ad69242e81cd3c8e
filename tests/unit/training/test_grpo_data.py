"""GRPO prompt records, the built-in arithmetic task and the tutorial's reward functions."""

import json
from importlib import resources
from pathlib import Path

import pytest

from lorakit.data import arithmetic
from lorakit.data.prompts import load_prompt_records
from lorakit.errors import LorakitError
from lorakit.training import rewards_math as M

ASSETS = Path(str(resources.files("lorakit") / "assets" / "arithmetic"))


def test_prompt_forms_and_columns(tmp_path):
    f = tmp_path / "p.jsonl"
    rows = [
        {"question": "1+1?", "solution": "2"},
        {"prompt": [{"role": "user", "content": "hi"}], "solution": "x"},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "solution": 3},
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = load_prompt_records(str(f), {"question": "prompt", "solution": "answer"}, system="Be brief.")
    assert got[0] == {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}],
        "answer": "2",
    }
    assert got[2]["prompt"][-1] == {"role": "user", "content": "q"} and got[2]["answer"] == 3


def test_a_record_without_a_prompt_names_file_and_line(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    with pytest.raises(LorakitError, match=r"p.jsonl:2: a GRPO record needs a `prompt`"):
        load_prompt_records(str(f))


def test_the_shipped_task_is_what_the_seeded_generator_writes(tmp_path):
    arithmetic.write(tmp_path)
    for name in ("train.jsonl", "heldout.jsonl"):
        assert (tmp_path / name).read_text() == (ASSETS / name).read_text()
    heldout = [json.loads(line) for line in (ASSETS / "heldout.jsonl").read_text().splitlines()]
    train = {json.loads(line)["prompt"] for line in (ASSETS / "train.jsonl").read_text().splitlines()}
    assert len(heldout) == 100 and not train & {r["prompt"] for r in heldout}
    assert all(int(r["answer"]) >= 0 for r in heldout)


def test_the_easy_level_is_shipped_exactly_and_its_heldout_is_unseen(tmp_path):
    arithmetic.write(tmp_path, level="easy")
    for name in ("easy_train.jsonl", "easy_heldout.jsonl"):
        assert (tmp_path / name).read_text() == (ASSETS / name).read_text()
    train = [json.loads(line) for line in (ASSETS / "easy_train.jsonl").read_text().splitlines()]
    heldout = [json.loads(line) for line in (ASSETS / "easy_heldout.jsonl").read_text().splitlines()]
    assert (len(train), len({r["prompt"] for r in train}), len({r["prompt"] for r in heldout})) == (169, 169, 100)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in heldout}
    for r in train + heldout:  # the answer is the question's own sum or difference
        a, op, b = r["prompt"].removeprefix("What is ").rstrip("?").split()
        assert int(r["answer"]) == (int(a) + int(b) if op == "+" else int(a) - int(b)) > 0


def test_tutorial_rewards():
    good = f"adding them{M.REASONING_END}so {M.SOLUTION_START}42{M.SOLUTION_END}\n"
    near = f"x{M.REASONING_END}{M.SOLUTION_START}40{M.SOLUTION_END}"
    bad = f"{M.SOLUTION_START}forty{M.SOLUTION_END}{M.SOLUTION_END}"
    completions = [[{"role": "assistant", "content": t}] for t in (good, near, bad, "no format")]
    answer = ["42"] * 4
    assert M.format_exact(completions) == [3.0, 3.0, 0.0, 0.0]
    assert M.format_approximate(completions) == [1.5, 1.5, -1.5, -3.0]
    assert M.answer_check(None, completions, answer) == [5.0, 2.0, -2.0, -2.0]
    assert M.number_check(None, completions, answer) == [3.5, -1.5, -2.5, -2.5]


def test_grpo_keys_in_the_config(tmp_path):
    from lorakit.config import load_config

    with pytest.raises(LorakitError, match="train.beta: a GRPO setting, but train.method is sft"):
        load_config({"train": {"beta": 0.1}})
    with pytest.raises(LorakitError, match="train.rewards: GRPO needs at least one reward function"):
        load_config({"train": {"method": "grpo"}})
    cfg_file = tmp_path / "sub" / "run.yaml"
    cfg_file.parent.mkdir()
    cfg_file.write_text(
        "train:\n  method: grpo\n  rewards: [mine.py:score, {function: 'other.py:f', weight: 2}, "
        "'lorakit.training.rewards_math:format_exact']\n"
    )
    rewards = load_config(cfg_file).train.rewards  # files beside the config, made absolute for the run folder
    assert rewards[0] == f"{cfg_file.parent.resolve() / 'mine.py'}:score"
    assert rewards[1]["function"] == f"{cfg_file.parent.resolve() / 'other.py'}:f"
    assert rewards[2] == "lorakit.training.rewards_math:format_exact"
