"""The shipped example tool-use dataset: regenerated exactly, valid, its tools correct; inspect shows tool use."""

import json

from rich.console import Console

from lorakit.data import load_conversations
from lorakit.data.example_tool_data import COUNTS, write
from lorakit.data.example_tools import TEST_FILE, TRAIN_FILE, call_tool
from lorakit.data.problem_report import validate_data
from lorakit.data.stats import inspect_data, render_report


def test_the_generator_writes_exactly_the_shipped_files(tmp_path):
    paths = write(tmp_path)
    assert paths["train"].read_bytes() == TRAIN_FILE.read_bytes()
    assert paths["test"].read_bytes() == TEST_FILE.read_bytes()


def test_the_splits_are_valid_disjoint_and_cover_every_kind():
    questions = {}
    for split, path in (("train", TRAIN_FILE), ("test", TEST_FILE)):
        result = validate_data(str(path))
        assert result.problem_count == 0
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        kinds = {k: sum(r["kind"] == k for r in records) for k in COUNTS[split]}
        assert kinds == COUNTS[split]
        questions[split] = {r["messages"][1]["content"] for r in records}
        assert len(questions[split]) == len(records)  # no question twice within a split
    assert not questions["train"] & questions["test"]


def test_every_result_is_what_the_tool_returns():
    for conv in load_conversations(str(TEST_FILE)):
        calls = {c.id: c for m in conv.messages for c in m.tool_calls}
        for m in conv.messages:
            if m.role == "tool":
                assert m.content == call_tool(calls[m.tool_call_id].name, calls[m.tool_call_id].arguments)


def test_the_tools():
    assert json.loads(call_tool("convert_units", {"value": 100, "from_unit": "C", "to_unit": "F"})) == {
        "value": 212,
        "unit": "F",
    }
    assert json.loads(call_tool("convert_units", {"value": 1, "from_unit": "mi", "to_unit": "km"}))["value"] == 1.6093
    assert json.loads(call_tool("calculate", {"expression": "(2 + 3) * 4 / 8"})) == {"result": 2.5}
    assert json.loads(call_tool("lookup_element", {"element": "Fe"}))["name"] == "iron"
    for name, args in (
        ("calculate", {"expression": "__import__('os').getcwd()"}),
        ("calculate", {"expression": "1/0"}),
        ("convert_units", {"value": 1, "from_unit": "kg", "to_unit": "km"}),
        ("lookup_element", {"element": "kryptonite"}),
        ("lookup_element", {"name": "iron"}),
        ("weather", {}),
    ):
        assert "error" in json.loads(call_tool(name, args))


def test_inspect_shows_the_tools_and_trains_only_the_calls_and_answers(qwen3_tok):
    res = inspect_data(str(TEST_FILE), qwen3_tok, preview=3)
    use = res.summary()["tool_use"]
    assert use["records"] == sum(COUNTS["test"].values())
    assert use["calls"] == use["results"] and use["parallel_turns"] == COUNTS["test"]["parallel"]
    assert set(use["tools"]) == {"convert_units", "calculate", "lookup_element"}
    assert any("<tool_call>" in p for _, pieces in res.previews for p, trained in pieces if trained)
    for _, pieces in res.previews:
        shown = "".join(p for p, _ in pieces)
        trained = "".join(p for p, t in pieces if t)
        assert "<tools>" in shown and "<tools>" not in trained
        assert "<tool_response>" not in trained
        # the tool list explains the format with two <tool_call> tags; every other one is a trained call
        assert trained.count("<tool_call>") == shown.count("<tool_call>") - 2
    console = Console(record=True, width=120)
    render_report(res, console)
    out = console.export_text()
    assert "tool use" in out and "tool lookup_element" in out and "<tool_call>" in out
