"""Whatever a file holds, reading it either works or yields one-line problems naming file:line: never a traceback."""

import json
import os

import pytest

from lorakit.data import load_conversations, readers
from lorakit.data.problem_report import report_lines, validate_data
from lorakit.errors import LorakitError

GOOD = {"instruction": "q", "output": "a"}


def problems(path, **kw):
    return [str(p) for p in validate_data(str(path), max_errors=10_000, **kw).problems]


def test_fixture_with_every_kind_of_record_problem(fixtures):
    path = fixtures / "bad.jsonl"
    got = problems(path)
    want = [
        "2: invalid JSON: Expecting value at column 40 (record cut short?)",
        "3: instruction: empty (and no input)",
        "4: output: missing",
        "5: output: expected a string, found a number",
        "6: messages[1].role: unknown role 'robot'",
        "7: turn 1: turns out of order",
        "7: turn 2: the conversation must end with an assistant turn",
        "8: no assistant turn",
        "9: expected a JSON object per record, found an array",
        "10: unknown schema (keys: answer, question)",
    ]
    assert len(got) == len(want)
    for line, w in zip(got, want):
        assert line.startswith(f"{path}:{w}"), line
    with pytest.raises(LorakitError, match=r"bad.jsonl:2: invalid JSON"):
        load_conversations(str(path))


def test_truncated_json_array(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text('[\n  {"instruction": "q", "output": "a"},\n  {"instruction": "r", "out')
    got = problems(path)
    assert len(got) == 1 and got[0].startswith(f"{path}:3: invalid JSON")
    assert validate_data(str(path)).conversations  # the complete first record still counts


@pytest.mark.parametrize(
    "body,msg",
    [
        ('{"a": 1} trailing', "invalid JSON"),
        ('[{"instruction": "q", "output": "a"}] extra', "extra data after the array"),
        ('[{"instruction": "q", "output": "a"} {"x": 1}]', "expected ',' or ']'"),
        ('"just a string"', "expected an array of records"),
        ("[]", "empty array"),
        ("   \n\n", "empty file"),
        ("[" * 100_000, "nested too deeply"),
    ],
)
def test_malformed_json_files(tmp_path, body, msg):
    path = tmp_path / "x.json"
    path.write_text(body)
    got = problems(path)
    assert got and msg in got[-1], got


@pytest.mark.parametrize("name", ["e.jsonl", "e.json", "e.csv", "e.parquet"])
def test_empty_files(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    assert problems(tmp_path / name) == [f"{tmp_path / name}: empty file"]
    with pytest.raises(LorakitError, match="empty file"):
        load_conversations(str(tmp_path / name))


def test_non_utf8_line_is_reported_and_the_rest_read(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        json.dumps(GOOD).encode()
        + b"\n"
        + '{"instruction": "caf\xe9", "output": "x"}\n'.encode("latin-1")
        + json.dumps(GOOD).encode()
        + b"\n"
    )
    result = validate_data(str(path))
    assert [str(p) for p in result.problems] == [f"{path}:2: not UTF-8 text (byte 0xe9 at column 21)"]
    assert len(result.conversations) == 2


def test_utf16_file_gets_a_hint(tmp_path):
    path = tmp_path / "u16.json"
    path.write_bytes(json.dumps([GOOD]).encode("utf-16"))
    assert problems(path) == [
        f"{path}:1: not UTF-8 text (byte 0xff at column 1); the file looks like UTF-16, save it as UTF-8"
    ]


def test_binary_file_gives_problems_not_a_traceback(tmp_path):
    path = tmp_path / "noise.jsonl"
    path.write_bytes(os.urandom(200_000) + b"\x00\xff\n\x00")
    result = validate_data(str(path))
    assert result.problem_count > 0 and not result.conversations
    assert all(":" in str(p) for p in result.problems)
    for name in ("noise.json", "noise.csv", "noise.parquet"):
        (tmp_path / name).write_bytes(os.urandom(5000))
        assert problems(tmp_path / name), name


def test_long_line_is_skipped_without_reading_it_whole(tmp_path, monkeypatch):
    # Stands in for a 2 GB single line: the reader refuses lines over MAX_LINE_BYTES and moves on.
    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 1024)
    path = tmp_path / "long.jsonl"
    with open(path, "wb") as f:
        f.write(json.dumps(GOOD).encode() + b"\n")
        f.write(b'{"instruction": "' + b"x" * 3_000_000 + b'", "output": "a"}\n')
        f.write(json.dumps(GOOD).encode() + b"\n")
    result = validate_data(str(path))
    assert [str(p) for p in result.problems] == [f"{path}:2: line longer than 1024 bytes; not read"]
    assert [c.source for c in result.conversations] == [f"{path}:1", f"{path}:3"]


def test_single_line_without_newline_longer_than_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 4096)
    path = tmp_path / "one.jsonl"
    path.write_bytes(b"[" + b"1," * 500_000)
    assert problems(path) == [f"{path}:1: line longer than 4096 bytes; not read"]


def test_ten_thousand_errors_are_capped_in_the_report(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("".join('{"instruction": "q"}\n' for _ in range(10_000)))
    result = validate_data(str(path), max_errors=20)
    lines = report_lines(result, 20)
    assert len(result.problems) == 21  # only what the report needs is kept
    assert lines[19] == f"{path}:20: output: missing"
    assert lines[20] == "... and 9980 more"
    assert lines[21].startswith("10000 records in 1 file: 0 good, 10000 with problems")


def test_csv_problems(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('instruction,output\nq,a\nonly one\nq,"unclosed\n')
    got = problems(path)
    assert got[0] == f"{path}:3: expected 2 columns, found 1"
    assert got[1].startswith(f"{path}:4: invalid CSV: unexpected end of data")
    (tmp_path / "h.csv").write_text("instruction,output\n")
    assert problems(tmp_path / "h.csv") == [f"{tmp_path / 'h.csv'}: no records (header only)"]


def test_csv_with_a_bad_nested_list(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text('messages\n"[{""role"": ""user"""\n')
    assert "messages: invalid JSON list" in problems(path)[0]


def test_paths_that_do_not_exist_or_hold_no_data(tmp_path):
    with pytest.raises(LorakitError, match="no such file or folder"):
        load_conversations(str(tmp_path / "missing.jsonl"))
    with pytest.raises(LorakitError, match="matches no data files"):
        load_conversations(str(tmp_path / "*.jsonl"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LorakitError, match="holds no data files"):
        load_conversations(str(tmp_path / "empty"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(LorakitError, match="unsupported file type"):
        load_conversations(str(tmp_path / "notes.txt"))
    with pytest.raises(LorakitError, match="no data path"):
        load_conversations("")


def test_wrong_types_inside_messages(tmp_path):
    path = tmp_path / "m.jsonl"
    rows = [
        {"messages": "not a list"},
        {"messages": [{"role": "user", "content": ["x"]}, "turn"]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>never closed"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "   "}]},
        {"conversations": [{"from": "human", "value": "q"}, {"from": 3, "value": "a"}]},
        {"instruction": "q", "output": "a", "history": [["only one"]]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = problems(path)
    assert f"{path}:1: messages: expected a list, found a string" in got
    assert f"{path}:2: messages[0].content: expected a string, found a list" in got
    assert f"{path}:2: messages[1]: expected an object, found a string" in got
    assert f"{path}:3: turn 2: '<think>' is never closed with '</think>'" in got
    assert f"{path}:4: messages[1].content: empty" in got
    assert f"{path}:5: conversations[1].from: expected a string, found a number" in got
    assert f"{path}:6: history[0]: expected a [question, answer] pair of strings" in got


def test_unknown_format_name():
    with pytest.raises(LorakitError, match="unknown format"):
        load_conversations("x.jsonl", format="chatml")


def test_lone_surrogates_are_reported_with_file_line_and_field(tmp_path, qwen3_tok):
    """JSON may escape half a UTF-16 pair; validate names it, prepare stops on it in one line (issue 18)."""
    from lorakit.data.prepared import data_config, prepare_splits

    rows = [
        '{"instruction": "q\\ud800", "output": "a"}',
        '{"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "x\\udfffy"}]}',
        '{"instruction": "q", "output": "a", "history": [["h\\udbff", "a"]]}',
        '{"\\ud800": 1}',
        json.dumps(GOOD),
    ]
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(rows) + "\n")
    got = problems(path)
    assert got == [
        f"{path}:1: instruction: lone UTF-16 surrogate \\ud800 at character 2: not valid Unicode text; "
        "fix or drop that escape",
        f"{path}:2: messages[1].content: lone UTF-16 surrogate \\udfff at character 2: not valid Unicode "
        "text; fix or drop that escape",
        f"{path}:3: history[0][0]: lone UTF-16 surrogate \\udbff at character 2: not valid Unicode text; "
        "fix or drop that escape",
        f"{path}:4: unknown schema (keys: \\ud800); expected alpaca (instruction/output), sharegpt "
        "(conversations), messages, or prompt/completion; map columns with --columns / data.columns",
    ]
    for line in report_lines(validate_data(str(path))):
        line.encode("utf-8")  # every report line prints on a UTF-8 terminal
    with pytest.raises(LorakitError, match=r"s.jsonl:1: instruction: lone UTF-16 surrogate"):
        prepare_splits(data_config(path=str(path)), qwen3_tok)
