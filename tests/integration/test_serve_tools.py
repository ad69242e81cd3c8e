"""Tool calls from `lorakit serve` for real: the CLI in a subprocess, the official openai client, and the
OpenAI Agents SDK running its tool loop against it.

The model is qwen3-tiny-random (random weights): whatever it "wants", `tool_choice` required or named
must still give a call whose arguments parse and fit the schema, which only constrained decoding can
guarantee. Sampling is seeded, so every run sees the same tokens.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from jsonschema import validate
from test_serve import Server

from lorakit.data.example_tools import TOOLS, call_tool

BASE = "qwen3-tiny-random"
NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}
# convert_units: a number and two enums, closed to other keys (as OpenAI's strict mode writes schemas), so
# even random weights finish a call in a few dozen tokens
CONVERT = {
    "type": "function",
    "function": {
        **TOOLS[0]["function"],
        "parameters": {**TOOLS[0]["function"]["parameters"], "additionalProperties": False},
    },
}
PICK = {
    "type": "function",
    "function": {
        "name": "pick_colour",
        "description": "Pick a colour.",
        "parameters": {
            "type": "object",
            "properties": {
                "colour": {"type": "string", "enum": ["red", "green", "blue"]},
                "count": {"type": "integer", "minimum": 1, "maximum": 9},
            },
            "required": ["colour", "count"],
            "additionalProperties": False,
        },
    },
}
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (CONVERT, PICK)}
ASK = [{"role": "user", "content": "How many feet are 3 metres?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(["--model", BASE, "--max-model-len", "1024"], tmp_path_factory.mktemp("logs") / "tools.log")
    yield s
    s.stop()


def ask(client, stream=False, **kw):
    # one call per answer: random weights given the choice would go on calling until max_tokens
    args = (
        dict(
            model=BASE,
            messages=ASK,
            tools=[CONVERT, PICK],
            temperature=1.0,
            seed=7,
            max_tokens=96,
            parallel_tool_calls=False,
            extra_body=NO_THINK,
        )
        | kw
    )
    if not stream:
        return client.chat.completions.create(**args).choices[0]
    return list(client.chat.completions.create(stream=True, **args))


def check_call(name, arguments):
    args = json.loads(arguments, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    validate(args, SCHEMAS[name])
    return args


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "convert_units"}}], ids=["required", "named"]
)
def test_forced_call_parses_and_fits_the_schema(server, choice):
    client = server.client()
    got = ask(client, tool_choice=choice)
    assert got.finish_reason == "tool_calls"
    assert got.message.content is None
    assert got.message.tool_calls, got
    for call in got.message.tool_calls:
        assert call.id.startswith("call_") and call.type == "function"
        check_call(call.function.name, call.function.arguments)
    if isinstance(choice, dict):
        assert {c.function.name for c in got.message.tool_calls} == {"convert_units"}


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "pick_colour"}}], ids=["required", "named"]
)
def test_streamed_call_comes_as_openai_streams_it(server, choice):
    chunks = ask(server.client(), stream=True, tool_choice=choice)
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [d.tool_calls for d in deltas if d.tool_calls]
    assert calls, deltas
    head = calls[0][0]  # first: index, id, type and name, with empty arguments
    assert head.index == 0 and head.id.startswith("call_") and head.type == "function"
    assert head.function.name and head.function.arguments == ""
    fragments = [tc.function.arguments for d in calls for tc in d if tc.index == 0 and tc.function.arguments]
    assert len(fragments) > 1, fragments  # the arguments stream as they are generated, not in one piece
    check_call(head.function.name, "".join(fragments))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    if isinstance(choice, dict):
        assert head.function.name == "pick_colour"


def test_tool_choice_none_never_calls(server):
    client = server.client()
    got = ask(client, tool_choice="none", max_tokens=24)
    assert got.message.tool_calls is None and got.finish_reason in ("stop", "length")
    assert "<tool_call>" not in (got.message.content or "")
    chunks = ask(client, stream=True, tool_choice="none", max_tokens=24)
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)


def test_unimplemented_field_is_a_400_naming_it(server):
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        ask(server.client(), extra_body={**NO_THINK, "logit_bias": {"0": 5}})
    assert "logit_bias" in str(e.value) and "does not implement" in str(e.value)


def test_agents_sdk_runs_its_tool_loop(server):
    """The OpenAI Agents SDK: forced call on the first turn (reset to auto after it), the Python function
    runs on the parsed arguments, its result goes back to the model, and the run ends with an answer."""
    from agents import Agent, FunctionTool, ModelSettings, OpenAIChatCompletionsModel, Runner, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # no trace upload to OpenAI
    ran = []

    async def convert(ctx, arguments: str) -> str:
        args = check_call("convert_units", arguments)
        ran.append(args)
        return call_tool("convert_units", args)

    tool = FunctionTool(
        name="convert_units",
        description=CONVERT["function"]["description"],
        params_json_schema=SCHEMAS["convert_units"],
        on_invoke_tool=convert,
        strict_json_schema=False,
    )
    client = AsyncOpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=120)
    settings = ModelSettings(
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=1.0,
        max_tokens=64,
        extra_body={**NO_THINK, "seed": 11},
    )
    agent = Agent(
        name="converter",
        instructions="Convert units with the tool.",
        tools=[tool],
        model_settings=settings,
        model=OpenAIChatCompletionsModel(model=BASE, openai_client=client),
    )
    result = asyncio.run(Runner.run(agent, "How many feet are 3 metres?", max_turns=3))
    assert len(ran) == 1, result.new_items  # called once; the reset tool_choice lets the model answer after the result
    outputs = [item for item in result.new_items if item.type == "tool_call_output_item"]
    assert outputs and outputs[0].output == call_tool("convert_units", ran[0])
    assert isinstance(result.final_output, str)
