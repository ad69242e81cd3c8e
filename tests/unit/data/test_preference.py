"""Preference records in each common form, validated as file:line: field: what, and tokenized with
the prompt shared exactly by both completions (the truncation rule of data/preference_tokens.py)."""

import json

import pytest

from lorakit.data.conversation import Problem
from lorakit.data.preference import Unpaired, iter_preferences, load_preferences
from lorakit.data.preference_tokens import tokenize_pair
from lorakit.errors import LorakitError


def write(tmp_path, rows, name="p.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


USER = {"role": "user", "content": "Who are you?"}


def test_every_common_form_reads_as_the_same_pair(tmp_path):
    rows = [
        {"prompt": "Who are you?", "chosen": "Zhen Huan.", "rejected": "An AI."},
        {
            "prompt": [USER],
            "chosen": [{"role": "assistant", "content": "Zhen Huan."}],
            "rejected": [{"role": "assistant", "content": "An AI."}],
        },
        {
            "chosen": [USER, {"role": "assistant", "content": "Zhen Huan."}],
            "rejected": [USER, {"role": "assistant", "content": "An AI."}],
        },
        {
            "conversations": [{"from": "human", "value": "Who are you?"}],
            "chosen": {"from": "gpt", "value": "Zhen Huan."},
            "rejected": {"from": "gpt", "value": "An AI."},
        },
    ]
    pairs = load_preferences(str(write(tmp_path, rows)))
    assert len({(repr(p.prompt), repr(p.chosen), repr(p.rejected)) for p in pairs}) == 1
    assert pairs[0].prompt[-1].content == "Who are you?" and pairs[0].chosen[0].role == "assistant"


def test_kto_records_read_as_unpaired(tmp_path):
    path = write(
        tmp_path,
        [
            {"prompt": "Hi", "completion": "Hello.", "label": True},
            {"prompt": "Hi", "completion": "Go away.", "label": "no"},
        ],
    )
    items = list(iter_preferences(str(path), kind="unpaired"))
    assert isinstance(items[0], Unpaired) and items[0].label is True
    assert str(items[1]) == f"{path}:2: label: expected true or false, found a string"


def test_bad_pairs_are_named_by_line_and_field(tmp_path):
    path = write(
        tmp_path,
        [
            {"prompt": "Hi", "chosen": "Same.", "rejected": "Same."},
            {"prompt": "Hi", "chosen": "", "rejected": "No."},
            {
                "chosen": [USER, {"role": "assistant", "content": "a"}],
                "rejected": [{"role": "user", "content": "Other?"}, {"role": "assistant", "content": "b"}],
            },
            {"prompt": "Hi", "chosen": "Yes."},
            {"instruction": "Hi", "output": "Hello."},
        ],
    )
    problems = [str(p) for p in iter_preferences(str(path)) if isinstance(p, Problem)]
    assert problems[0] == f"{path}:1: chosen: equal to rejected: the pair prefers nothing"
    assert problems[1] == f"{path}:2: chosen: empty"
    assert problems[2].startswith(f"{path}:3: chosen/rejected: the prompt differs between chosen and rejected")
    assert problems[3] == f"{path}:4: rejected: missing"
    assert problems[4].startswith(f"{path}:5: not a preference record")
    with pytest.raises(LorakitError, match=r":1: chosen: equal to rejected"):
        load_preferences(str(path))


def test_both_completions_follow_the_same_prompt_tokens_and_truncate_from_the_right(tmp_path):
    from lorakit.models import load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model("qwen3-tiny-random"))
    pair = load_preferences(
        str(
            write(
                tmp_path,
                [
                    {
                        "prompt": "Who are you?",
                        "chosen": "I am Zhen Huan of the palace.",
                        "rejected": "I am an AI assistant.",
                    }
                ],
            )
        )
    )[0]
    t = tokenize_pair(tok, pair, max_length=1024)
    text = tok.decode(t["prompt"])
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # thinking off: the empty block is prompt
    assert tok.decode(t["chosen"]).startswith("I am Zhen Huan") and tok.decode(t["rejected"]).endswith("<|im_end|>\n")
    short = tokenize_pair(tok, pair, max_length=len(t["prompt"]) + 3)
    assert short["prompt"] == t["prompt"] and short["chosen"] == t["chosen"][:3] and short["truncated"]
    assert tokenize_pair(tok, pair, max_length=len(t["prompt"])) is None  # the prompt fills max_length: dropped


def test_inspect_shows_pair_lengths_and_the_truncation_rule(tmp_path):
    import lorakit.data

    path = write(
        tmp_path, [{"prompt": "Who are you?", "chosen": "I am Zhen Huan of the palace, " * 8, "rejected": "An AI."}]
    )
    result = lorakit.data.inspect(str(path), model="qwen3-tiny-random", max_length=40)
    summary = result.summary()
    assert summary["pairs"] == 1 and summary["truncated"] == 1 and summary["chosen"]["max"] <= 40
    assert any("truncation rule: prompt kept whole" in line for line in result.lines())


def test_validate_reads_a_preference_file_as_pairs(tmp_path):
    import lorakit.data

    path = write(
        tmp_path,
        [{"prompt": "Hi", "chosen": "Hello.", "rejected": "Go."}, {"prompt": "Hi", "chosen": "x", "rejected": "x"}],
    )
    result = lorakit.data.validate(str(path))
    assert len(result.conversations) == 1 and result.bad_records == 1
    assert [str(p) for p in result.problems] == [f"{path}:2: chosen: equal to rejected: the pair prefers nothing"]
