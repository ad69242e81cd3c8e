"""Reading tool conversations (OpenAI messages, ShareGPT function calls, per-file tools) and every
validation error as `file:line: field: what`."""

import json

import pytest

from lorakit.data import load_conversations
from lorakit.data.conversation import Conversation, Message, ToolCall
from lorakit.data.problem_report import validate_data
from lorakit.data.tools import hermes_text, parse_hermes

PARAMS = {
    "type": "object",
    "properties": {"value": {"type": "number"}, "unit": {"type": "string"}},
    "required": ["value", "unit"],
}
TOOLS = [
    {"type": "function", "function": {"name": "convert", "description": "Convert.", "parameters": PARAMS}},
    {
        "type": "function",
        "function": {
            "name": "calculate",
            "description": "Arithmetic.",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            },
        },
    },
]


def openai_record(calls=None, results=None, tools=TOOLS):
    calls = (
        calls
        if calls is not None
        else [
            {"id": "a", "type": "function", "function": {"name": "convert", "arguments": '{"value": 3, "unit": "km"}'}}
        ]
    )
    results = results if results is not None else [{"role": "tool", "tool_call_id": "a", "content": "1.86 mi"}]
    rec = {
        "messages": [
            {"role": "user", "content": "3 km in miles?"},
            {"role": "assistant", "content": None, "tool_calls": calls},
            *results,
            {"role": "assistant", "content": "1.86 miles."},
        ]
    }
    if tools is not None:
        rec["tools"] = tools
    return rec


def write_jsonl(tmp_path, *records, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def problems(path):
    return [str(p) for p in validate_data(str(path), max_errors=100).problems]


def test_openai_tool_record_reads_with_empty_content_and_string_arguments(tmp_path):
    (conv,) = load_conversations(str(write_jsonl(tmp_path, openai_record())))
    assert conv.tools == TOOLS
    assert conv.messages[1] == Message(
        "assistant", "", tool_calls=[ToolCall("a", "convert", {"value": 3, "unit": "km"})]
    )
    assert conv.messages[2] == Message("tool", "1.86 mi", tool_call_id="a")


def test_parallel_results_without_ids_answer_the_calls_in_order(tmp_path):
    calls = [
        {"type": "function", "function": {"name": "convert", "arguments": {"value": v, "unit": "km"}}} for v in (1, 2)
    ]
    results = [{"role": "tool", "content": "0.62"}, {"role": "tool", "content": "1.24"}]
    (conv,) = load_conversations(str(write_jsonl(tmp_path, openai_record(calls, results))))
    assert [c.id for c in conv.messages[1].tool_calls] == ["call_0", "call_1"]
    assert [(m.tool_call_id, m.content) for m in conv.messages[2:4]] == [("call_0", "0.62"), ("call_1", "1.24")]


def test_sharegpt_function_call_reads_to_the_same_conversation_as_openai(tmp_path):
    bare = [t["function"] for t in TOOLS]
    sharegpt = {
        "tools": json.dumps(bare),
        "conversations": [
            {"from": "human", "value": "3 km in miles?"},
            {
                "from": "function_call",
                "value": json.dumps({"name": "convert", "arguments": {"value": 3, "unit": "km"}}),
            },
            {"from": "observation", "value": "1.86 mi"},
            {"from": "gpt", "value": "1.86 miles."},
        ],
    }
    calls = [{"type": "function", "function": {"name": "convert", "arguments": {"value": 3, "unit": "km"}}}]
    openai = openai_record(calls, [{"role": "tool", "content": "1.86 mi"}])
    a, b = load_conversations(str(write_jsonl(tmp_path, sharegpt, openai)))
    assert (a.messages, a.tools, a.key()) == (b.messages, b.tools, b.key())
    assert a.messages[2].tool_call_id == "call_0"


def test_sharegpt_parallel_calls_and_their_results_in_one_observation(tmp_path):
    sharegpt = {
        "tools": [t["function"] for t in TOOLS],
        "conversations": [
            {"from": "human", "value": "1 and 2 km in miles?"},
            {
                "from": "function_call",
                "value": json.dumps([{"name": "convert", "arguments": {"value": v, "unit": "km"}} for v in (1, 2)]),
            },
            {"from": "observation", "value": json.dumps(["0.62", "1.24"])},
            {"from": "gpt", "value": "0.62 and 1.24 miles."},
        ],
    }
    (conv,) = load_conversations(str(write_jsonl(tmp_path, sharegpt)))
    assert [(m.role, m.content, m.tool_call_id) for m in conv.messages[2:4]] == [
        ("tool", "0.62", "call_0"),
        ("tool", "1.24", "call_1"),
    ]


def test_tools_per_file_in_a_json_wrapper(tmp_path):
    path = tmp_path / "d.json"
    record = openai_record(tools=None)
    path.write_text(json.dumps({"tools": TOOLS, "data": [record, {**record, "tools": TOOLS[:1]}]}), encoding="utf-8")
    first, second = load_conversations(str(path))
    assert first.tools == TOOLS and second.tools == TOOLS[:1]


def test_key_separates_different_calls_and_keeps_the_old_key_without_tools(tmp_path):
    a = openai_record()
    b = openai_record(
        [{"id": "a", "type": "function", "function": {"name": "convert", "arguments": {"value": 4, "unit": "km"}}}]
    )
    ka, kb = (c.key() for c in load_conversations(str(write_jsonl(tmp_path, a, b))))
    assert ka != kb
    plain = Conversation([Message("user", "q"), Message("assistant", "a")])
    assert plain.key() == '[["user", "q", null], ["assistant", "a", null]]'


# --- every validation error, as file:line: field: what --------------------------------------------


def bad_call(name="convert", arguments='{"value": 3, "unit": "km"}'):
    return openai_record([{"id": "a", "type": "function", "function": {"name": name, "arguments": arguments}}])


@pytest.mark.parametrize(
    "record, want",
    [
        (
            bad_call(name="weather"),
            "messages[1].tool_calls[0].function.name: calls 'weather', which is not in tools (convert, calculate)",
        ),
        (
            openai_record(tools=None),
            "messages[1].tool_calls[0].function.name: calls 'convert', which is not in tools "
            "(none: the record has no tools)",
        ),
        (
            bad_call(arguments='{"value": 3, "unit": '),
            "messages[1].tool_calls[0].function.arguments: not JSON: Expecting value at character 22",
        ),
        (
            bad_call(arguments='[3, "km"]'),
            "messages[1].tool_calls[0].function.arguments: expected a JSON object, found a list",
        ),
        (
            bad_call(arguments={"value": 3}),
            "messages[1].tool_calls[0].function.arguments: do not fit the schema of "
            "'convert': missing required parameter 'unit'",
        ),
        (
            bad_call(arguments={"value": "three", "unit": "km"}),
            "messages[1].tool_calls[0].function.arguments: do not "
            "fit the schema of 'convert': value: 'three' is not of "
            "type 'number'",
        ),
        (
            openai_record(results=[{"role": "tool", "tool_call_id": "zz", "content": "1.86"}]),
            "messages[2].tool_call_id: 'zz' matches no call before it (calls: a)",
        ),
        (
            openai_record(tools=[{"type": "function", "function": {"name": "convert", "parameters": "value, unit"}}]),
            "tools[0].function.parameters: not a JSON Schema object: expected an object, found a string",
        ),
        (
            openai_record(
                tools=[
                    {
                        "type": "function",
                        "function": {
                            "name": "convert",
                            "parameters": {"type": "object", "properties": {"value": {"type": "numbr"}}},
                        },
                    }
                ]
            ),
            "tools[0].function.parameters: not a JSON Schema object: 'numbr' is not valid under any of the given schemas "  # noqa: E501
            "at $.properties.value.type",
        ),
        (
            openai_record(
                tools=[{"type": "function", "function": {"name": "convert", "parameters": {"type": "array"}}}]
            ),
            "tools[0].function.parameters: not a JSON Schema object: arguments are an object, so its type must be "
            "'object', not 'array'",
        ),
        (openai_record(tools='[{"name": "convert"'), "tools: not JSON: Expecting ',' delimiter at character 20"),
        (openai_record(tools=[TOOLS[0], TOOLS[0]]), "tools[1].name: two tools are named 'convert'"),
    ],
)
def test_each_tool_problem_is_one_line_naming_file_line_and_field(tmp_path, record, want):
    path = write_jsonl(
        tmp_path, {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}, record
    )
    assert problems(path) == [f"{path}:2: {want}"]


def test_sharegpt_function_call_problems_name_the_turn(tmp_path):
    rec = {
        "tools": [t["function"] for t in TOOLS],
        "conversations": [
            {"from": "human", "value": "q"},
            {"from": "function_call", "value": '{"name": "convert", "arguments": {}}'},
            {"from": "observation", "value": "r"},
            {"from": "gpt", "value": "a"},
        ],
    }
    path = write_jsonl(tmp_path, rec)
    assert problems(path) == [
        f"{path}:1: conversations[1].value.arguments: do not fit the schema of 'convert': "
        "missing required parameter 'value'"
    ]


# --- Hermes text ---------------------------------------------------------------------------------


def test_hermes_text_round_trips():
    calls = [
        ToolCall("call_0", "convert", {"value": 3, "unit": "km"}),
        ToolCall("call_1", "calculate", {"expression": "1+1"}),
    ]
    assert parse_hermes("Let me check.\n" + hermes_text(calls)) == ("Let me check.", calls)
    assert parse_hermes("No call here.") == ("No call here.", [])


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "convert", "arguments": {\n</tool_call>',
        '<tool_call>\n{"arguments": {}}\n</tool_call>',
        '<tool_call>\n{"name": "convert", "arguments": {}}',
        '<tool_call>\n{"name": "convert", "arguments": [1]}\n</tool_call>',
        '<tool_call>\n{"name": "convert", "arguments": {}}\n</tool_call> and more',
    ],
)
def test_malformed_hermes_text_is_not_a_call(text):
    assert parse_hermes(text) is None


def test_parquet_tool_records_read_as_jsonl_despite_arrow_struct_padding(tmp_path):
    """Arrow gives every call's arguments (and every tool schema) the union of all keys, padded with null."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lorakit.data.example_tools import TEST_FILE

    records = [json.loads(line) for line in TEST_FILE.read_text(encoding="utf-8").splitlines()[:12]]
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "d.parquet")
    jsonl = write_jsonl(tmp_path, *records)
    for a, b in zip(load_conversations(str(tmp_path / "d.parquet")), load_conversations(str(jsonl)), strict=True):
        assert (a.messages, a.tools) == (b.messages, b.tools)
