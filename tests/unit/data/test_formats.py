"""Every schema and file format becomes the same Conversation."""

import json

import pytest

from lorakit.data import Conversation, Message, load_conversations
from lorakit.errors import LorakitError


def roles(c: Conversation):
    return [(m.role, m.content, m.reasoning) for m in c.messages]


def test_alpaca_jsonl(fixtures):
    convs = load_conversations(str(fixtures / "alpaca.jsonl"))
    assert roles(convs[0]) == [("user", "Translate to French\nGood morning", None), ("assistant", "Bonjour", None)]
    assert roles(convs[1])[0] == ("system", "You are terse.", None)
    assert roles(convs[2]) == [
        ("user", "Name a fruit", None),
        ("assistant", "Apple", None),
        ("user", "And another?", None),
        ("assistant", "Green", None),
    ]
    assert convs[1].source.endswith("alpaca.jsonl:2")


def test_huanhuan_json_array_keeps_line_numbers(fixtures):
    convs = load_conversations(str(fixtures / "huanhuan.json"))
    assert len(convs) == 4
    assert [c.source.rsplit(":", 1)[1] for c in convs] == ["2", "7", "12", "17"]
    assert roles(convs[2]) == [("user", "你是谁？", None), ("assistant", "家父是大理寺少卿甄远道。", None)]


def test_system_prompt_added_where_missing_and_alpaca_system_wins(fixtures):
    convs = load_conversations(str(fixtures / "alpaca.jsonl"), system="Default.")
    assert convs[0].messages[0] == Message("system", "Default.")
    assert convs[1].messages[0] == Message("system", "You are terse.")


def test_sharegpt(fixtures):
    convs = load_conversations(str(fixtures / "sharegpt.json"))
    assert roles(convs[0]) == [("user", "Hi", None), ("assistant", "Hello! How can I help?", None)]
    assert [m.role for m in convs[1].messages] == ["system", "user", "assistant", "user", "assistant"]


def test_messages_with_reasoning_field_and_inline_think(fixtures):
    convs = load_conversations(str(fixtures / "messages.jsonl"))
    assert convs[0].messages[-1] == Message("assistant", "Yes.", "7 has no divisors but 1 and 7.")
    assert convs[1].messages[-1] == Message("assistant", "No.", "9 = 3 x 3.")
    assert convs[2].messages[-1] == Message("assistant", "hi", None)
    assert convs[0].has_reasoning and not convs[2].has_reasoning


def test_prompt_completion_csv(fixtures):
    convs = load_conversations(str(fixtures / "prompt_completion.csv"))
    assert roles(convs[1]) == [("user", "Quote, with comma", None), ("assistant", "Done", None)]
    assert convs[0].source.endswith(":2")


def test_prompt_completion_conversational():
    from lorakit.data.formats import to_conversation

    rec = {"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}]}
    assert roles(to_conversation(rec, "x:1", "prompt_completion")) == [("user", "q", None), ("assistant", "a", None)]


RECORDS = [
    {"instruction": "i", "input": "", "output": "o"},
    {"conversations": [{"from": "human", "value": "u"}, {"from": "gpt", "value": "g"}]},
    {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "m", "reasoning_content": "r"}]},
    {"prompt": "p", "completion": "c"},
]
EXPECTED = [
    [("user", "i", None), ("assistant", "o", None)],
    [("user", "u", None), ("assistant", "g", None)],
    [("user", "u", None), ("assistant", "m", "r")],
    [("user", "p", None), ("assistant", "c", None)],
]


def _write(path, fmt, records):
    if fmt == "json":
        path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), path)
    elif fmt == "csv":
        import pandas as pd

        rows = [{k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in records]
        pd.DataFrame(rows).to_csv(path, index=False)


@pytest.mark.parametrize("fmt", ["json", "jsonl", "parquet", "csv"])
@pytest.mark.parametrize("i", range(len(RECORDS)))
def test_every_schema_round_trips_in_every_file_format(tmp_path, fmt, i):
    path = tmp_path / f"d.{fmt}"
    _write(path, fmt, [RECORDS[i], RECORDS[i]])
    convs = load_conversations(str(path))
    assert [roles(c) for c in convs] == [EXPECTED[i]] * 2


def test_mixed_schemas_in_one_file_and_a_forced_format(tmp_path):
    path = tmp_path / "mixed.jsonl"
    _write(path, "jsonl", RECORDS)
    assert [roles(c) for c in load_conversations(str(path))] == EXPECTED
    with pytest.raises(LorakitError, match=r"mixed.jsonl:2: output: missing \(format is alpaca"):
        load_conversations(str(path), format="alpaca")


def test_folder_glob_and_list(tmp_path, fixtures):
    d = tmp_path / "many"
    (d / "sub").mkdir(parents=True)
    _write(d / "a.jsonl", "jsonl", RECORDS[:2])
    _write(d / "sub" / "b.parquet", "parquet", RECORDS[2:3])
    (d / "README.md").write_text("not data")
    assert len(load_conversations(str(d))) == 3
    assert len(load_conversations(str(d / "*.jsonl"))) == 2
    assert len(load_conversations(str(tmp_path / "**" / "*.parquet"))) == 1
    assert len(load_conversations([str(d / "a.jsonl"), str(fixtures / "huanhuan.json")])) == 6


def test_hub_style_folder_uses_the_train_split(tmp_path):
    d = tmp_path / "hub" / "data"
    d.mkdir(parents=True)
    _write(d / "train-00000-of-00001.parquet", "parquet", RECORDS[:1] * 3)
    _write(d / "test-00000-of-00001.parquet", "parquet", RECORDS[1:2])
    convs = load_conversations(str(tmp_path / "hub"))
    assert len(convs) == 3 and all(c.messages[-1].content == "o" for c in convs)


def test_datasets_save_to_disk_folders(tmp_path):
    from datasets import Dataset, DatasetDict

    ds = Dataset.from_list([RECORDS[0]] * 2)
    ds.save_to_disk(str(tmp_path / "one"))
    DatasetDict({"train": ds, "test": Dataset.from_list([RECORDS[3]])}).save_to_disk(str(tmp_path / "dict"))
    assert [roles(c) for c in load_conversations(str(tmp_path / "one"))] == [EXPECTED[0]] * 2
    assert [roles(c) for c in load_conversations(str(tmp_path / "dict"))] == [EXPECTED[0]] * 2


@pytest.mark.parametrize(
    "columns", [{"question": "instruction", "answer": "output"}, {"instruction": "question", "output": "answer"}]
)
def test_column_mapping_either_direction(tmp_path, columns):
    path = tmp_path / "qa.jsonl"
    _write(path, "jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(LorakitError, match="unknown schema"):
        load_conversations(str(path))
    assert roles(load_conversations(str(path), columns=columns)[0]) == [("user", "q", None), ("assistant", "a", None)]


def test_bom_is_accepted(tmp_path):
    for name, body in (
        ("a.jsonl", json.dumps(RECORDS[0]) + "\n"),
        ("a.json", json.dumps([RECORDS[0]])),
        ("a.csv", "instruction,output\ni,o\n"),
    ):
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + body.encode())
        assert roles(load_conversations(str(tmp_path / name))[0]) == EXPECTED[0]


def test_jsonl_written_as_json(tmp_path):
    path = tmp_path / "lines.json"
    _write(path, "jsonl", RECORDS[:2])
    assert len(load_conversations(str(path))) == 2


def test_sharegpt_role_spellings():
    from lorakit.data.formats import to_conversation

    rec = {
        "conversations": [
            {"from": "system", "value": "s"},
            {"from": "user", "value": "u"},
            {"from": "assistant", "value": "a"},
            {"from": "human", "value": "u2"},
            {"from": "chatgpt", "value": "a2"},
        ]
    }
    assert [m.role for m in to_conversation(rec, "x:1", "sharegpt").messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
