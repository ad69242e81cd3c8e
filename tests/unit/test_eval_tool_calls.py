"""The eval's tool-call scores on hand-written answers, parsed by the server's Hermes parser."""

import pytest

from lorakit.data.conversation import Conversation, Message, ToolCall
from lorakit.data.example_tools import TOOLS
from lorakit.eval.tool_calls import cases_of, judge_answer, summarise
from lorakit.serve.tool_calls import hermes

CONVERT = ToolCall("call_0", "convert_units", {"value": 3, "from_unit": "m", "to_unit": "ft"})
CALC = ToolCall("call_1", "calculate", {"expression": "2 * 3"})


def block(name: str, args: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>'


def judge(text: str, expected: list[ToolCall]):
    return judge_answer(hermes.parse(text), expected, TOOLS)


RIGHT = block("convert_units", '{"to_unit": "ft", "value": 3.0, "from_unit": "m"}')


@pytest.mark.parametrize(
    "text, expected, name_right, args_right, called, problem",
    [
        # key order and 3 vs 3.0 do not matter: equal as JSON
        (RIGHT, [CONVERT], True, True, True, None),
        (block("calculate", '{"expression": "3 m in ft"}'), [CONVERT], False, False, True, "called calculate"),
        (
            block("convert_units", '{"value": 3, "from_unit": "m", "to_unit": "yd"}'),
            [CONVERT],
            True,
            False,
            True,
            "other arguments",
        ),
        (
            block("convert_units", '{"value": 3, "from_unit": "m"}'),
            [CONVERT],
            True,
            False,
            True,
            "convert_units: missing required parameter 'to_unit'",
        ),
        (
            block("convert_units", '{"value": 3, "from_unit": "m", "to_unit": "parsec"}'),
            [CONVERT],
            True,
            False,
            True,
            "convert_units: to_unit: 'parsec' is not one of",
        ),
        ("Three metres are about 9.84 feet.", [CONVERT], False, False, False, "no call"),
        (RIGHT + "\n" + block("calculate", '{"expression": "2 * 3"}'), [CONVERT], False, False, True, "called"),
        (RIGHT, [], False, False, True, "no call expected"),
        ("Paris.", [], False, False, False, None),
        (
            '<tool_call>\n{"name": "convert_units", "arguments": {"value": 3,\n</tool_call>',
            [CONVERT],
            False,
            False,
            True,
            "malformed call text",
        ),  # fmt: skip
        # parallel calls match as a set
        (block("calculate", '{"expression": "2 * 3"}') + "\n" + RIGHT, [CONVERT, CALC], True, True, True, None),
    ],
)
def test_each_answer_gets_its_verdict(text, expected, name_right, args_right, called, problem):
    v = judge(text, expected)
    assert (v.name_right, v.args_right, v.called) == (name_right, args_right, called)
    assert (v.problem or "").startswith(problem or "") and (v.problem is None) == (problem is None)


def test_counts_and_rates_per_kind_of_turn():
    tools_conv = Conversation(
        [
            Message("user", "3 m in feet?"),
            Message("assistant", "", tool_calls=[CONVERT]),
            Message("tool", "9.84", tool_call_id="call_0"),
            Message("assistant", "About 9.84 ft."),
        ],
        "t.jsonl:1",
        TOOLS,
    )
    plain = Conversation([Message("user", "hi"), Message("assistant", "hello")], "t.jsonl:2")
    cases = cases_of([tools_conv, plain])  # a conversation without tools is not a case
    assert [(c.turn, len(c.prefix.messages), bool(c.expected)) for c in cases] == [(2, 1, True), (4, 3, False)]
    verdicts = [judge(block("convert_units", '{"value": 3, "from_unit": "m"}'), cases[0].expected), judge(RIGHT, [])]
    got = summarise(cases, verdicts)
    assert got == {
        "name_right": 1,
        "args_right": 0,
        "called": 1,
        "no_call_right": 0,
        "malformed": 0,
        "name_accuracy": 1.0,
        "args_accuracy": 0.0,
        "call_rate": 1.0,
        "no_call_accuracy": 0.0,
        "turn_accuracy": 0.0,
    }
