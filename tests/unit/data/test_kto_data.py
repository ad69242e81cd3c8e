"""KTO's data (training/objectives/kto_data.py): unpaired answers and pairs unpaired as TRL does, the
prompt shared exactly with the pair tokenization, max_length cuts the answer, and one-line errors."""

import json

import pytest

from lorakit.config import DataConfig
from lorakit.errors import LorakitError
from lorakit.training.objectives.kto_data import prepare_unpaired


def write(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return str(path)


UNPAIRED = [
    {"prompt": "Who keeps the light?", "completion": "I do, love. Fair winds!", "label": True},
    {"prompt": "Who keeps the light?", "completion": "As an AI, I cannot keep lights.", "label": False},
    {"prompt": "Tea?", "completion": "Strong, with heather honey.", "label": True},
]


def test_unpaired_records_tokenize_with_the_prompt_shared(tmp_path, qwen3_tok):
    from lorakit.data.conversation import Message
    from lorakit.data.preference import Preference
    from lorakit.data.preference_tokens import tokenize_pair

    data = prepare_unpaired(DataConfig(path=write(tmp_path / "k.jsonl", UNPAIRED), eval_split=0), qwen3_tok)
    assert [u["label"] for u in data.train] == [True, False, True]
    # the same prompt and answer tokens as the pair tokenizer gives (one rule for DPO and KTO)
    pair = tokenize_pair(
        qwen3_tok,
        Preference(
            [Message("user", "Who keeps the light?")],
            [Message("assistant", "I do, love. Fair winds!")],
            [Message("assistant", "As an AI, I cannot keep lights.")],
        ),
    )
    assert data.train[0]["prompt"] == data.train[1]["prompt"] == pair["prompt"]
    assert data.train[0]["completion"] == pair["chosen"] and data.train[1]["completion"] == pair["rejected"]
    assert data.stats["train_desirable"] == 2


def test_pairs_are_unpaired_chosen_desirable_rejected_not(tmp_path, qwen3_tok):
    pairs = [
        {"prompt": "Who are you?", "chosen": "Captain Tamsin.", "rejected": "An AI assistant."},
        {"prompt": "Fog?", "chosen": "The grey thief.", "rejected": "Fog is water droplets."},
    ]
    data = prepare_unpaired(DataConfig(path=write(tmp_path / "p.jsonl", pairs), eval_split=0), qwen3_tok)
    assert [u["label"] for u in data.train] == [True, True, False, False]


def test_max_length_cuts_the_answer_and_drops_a_prompt_that_fills_it(tmp_path, qwen3_tok):
    long = [
        dict(UNPAIRED[0], completion="word " * 200),
        UNPAIRED[1],
        {"prompt": "x " * 300, "completion": "y", "label": False},
    ]
    data = prepare_unpaired(DataConfig(path=write(tmp_path / "l.jsonl", long), eval_split=0, max_length=64), qwen3_tok)
    assert len(data.train) == 2 and all(len(u["prompt"]) + len(u["completion"]) <= 64 for u in data.train)
    assert data.stats["train_truncated"] == 1 and data.stats["train_dropped_no_loss"] == 1


def test_one_kind_of_label_only_is_refused(tmp_path, qwen3_tok):
    good = [r for r in UNPAIRED if r["label"]]
    with pytest.raises(LorakitError, match="every answer is desirable"):
        prepare_unpaired(DataConfig(path=write(tmp_path / "g.jsonl", good), eval_split=0), qwen3_tok)


def test_a_label_that_is_not_a_boolean_names_file_line_and_field(tmp_path, qwen3_tok):
    bad = UNPAIRED[:2] + [dict(UNPAIRED[2], label="yes")]
    with pytest.raises(LorakitError, match=r"b\.jsonl:3.*label"):
        prepare_unpaired(DataConfig(path=write(tmp_path / "b.jsonl", bad), eval_split=0), qwen3_tok)
