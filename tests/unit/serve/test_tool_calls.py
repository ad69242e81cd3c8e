"""Tool calls in the built-in server: the Hermes parser, the stream splitter, the grammar mask, and the
request checks, on the real Qwen3 and SmolLM2 tokenizers (scripted models where the reply must be fixed)."""

from __future__ import annotations

import json

import pytest
import torch
from jsonschema import validate
from scripted_server import http, running_server

from lorakit.serve.tool_calls import UnknownFamily, family_of, hermes
from lorakit.serve.tool_calls.base import CallStream

CALL = '<tool_call>\n{"name": "calculate", "arguments": {"expression": "2 + 2"}}\n</tool_call>'
SCRIPTED: dict = {}  # the scripted model behind the `caller` server, to read the prompt it was given
TOOL = {
    "type": "function",
    "function": {
        "name": "calculate",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    },
}


def test_hermes_parse_gives_openai_calls_and_the_text_before():
    content, calls = hermes.parse("Let me check.\n" + CALL + "\n" + CALL.replace("2 + 2", "3"))
    assert content == "Let me check."
    assert [c.name for c in calls] == ["calculate", "calculate"]
    assert [json.loads(c.arguments) for c in calls] == [{"expression": "2 + 2"}, {"expression": "3"}]
    assert all(c.id.startswith("call_") for c in calls) and calls[0].id != calls[1].id


def test_numbers_stay_as_written():
    # 1E400 is valid JSON but a Python float makes it inf, which json.dumps writes as invalid `Infinity`
    _, calls = hermes.parse('<tool_call>\n{"name": "f", "arguments": {"x": 1E400, "y": -0.10}}\n</tool_call>')
    assert calls[0].arguments == '{"x": 1E400, "y": -0.10}'


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "f", "arguments": {"x": 1}\n</tool_call>',  # not JSON
        '<tool_call>\n{"name": "f", "arguments": {"x": NaN}}\n</tool_call>',  # Python's json takes NaN
        '<tool_call>\n{"arguments": {}}\n</tool_call>',  # no name
        '<tool_call>\n{"name": "f", "arguments": {}}',  # never closed
        CALL + "\nand some words after",
    ],
)
def test_malformed_calls_are_none(text):
    assert hermes.parse(text) is None


def _streamed(text: str, size: int):
    """Content and calls as a client assembles them from `size`-character pieces, plus the stream."""
    stream, content, calls, fragments = hermes.stream(), "", {}, {}
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    for i, piece in enumerate(pieces):
        more, deltas = stream.feed(piece, final=i == len(pieces) - 1)
        content += more
        for d in deltas:
            if d.id is not None:
                assert d.index not in calls and d.arguments == ""  # the head comes once, before any argument
                calls[d.index] = {"id": d.id, "name": d.name, "arguments": ""}
            else:
                calls[d.index]["arguments"] += d.arguments
                fragments[d.index] = fragments.get(d.index, 0) + 1
    return content, [calls[k] for k in sorted(calls)], fragments, stream


def test_stream_splitter_matches_the_whole_parse():
    nested = CALL.replace('"2 + 2"}', '"{2 + 2}", "note": "a } and a \\" in a string", "xs": [1, {"y": 2}]}')
    text = "Sure.\n" + CALL + "\n" + nested
    _, whole = hermes.parse(text)
    for size in (1, 3, 7, len(text)):
        content, calls, fragments, stream = _streamed(text, size)
        assert content == "Sure."
        assert [(c["name"], c["arguments"]) for c in calls] == [(c.name, c.arguments) for c in whole]
        assert [c["id"] for c in calls] == [c.id for c in stream.calls]  # the final calls keep the streamed ids
        if size < 8:  # the arguments went out as they were written, in many pieces
            assert min(fragments.values()) > 1
    assert json.loads(whole[1].arguments)["note"] == 'a } and a " in a string'


def test_arguments_written_otherwise_still_come_whole():
    # arguments as JSON text (some models write them so): not streamed, sent whole at the end
    text = '<tool_call>\n{"name": "calculate", "arguments": "{\\"expression\\": \\"1\\"}"}\n</tool_call>'
    content, calls, fragments, _ = _streamed(text, 2)
    assert content == "" and calls[0]["arguments"] == '{"expression": "1"}' and fragments == {0: 1}


def test_stream_splitter_sends_content_early_and_malformed_calls_as_content():
    stream = CallStream(hermes.OPEN_TAG, hermes.parse)
    assert stream.feed("Hello <tool") == ("Hello ", [])  # "<tool" could open a call: held back
    assert stream.feed("box> world") == ("<toolbox> world", [])
    assert stream.feed("\n<tool_call>\n{broken") == ("", [])
    assert stream.feed("", final=True) == ("\n<tool_call>\n{broken", [])


def test_family_from_template():
    assert family_of("... <tool_call> ... </tool_call> ...", "m") is hermes
    with pytest.raises(UnknownFamily, match=r"^llama: .*does not parse"):
        family_of("{{ '<|python_tag|>' }}", "llama")


@pytest.fixture(scope="module")
def qwen_engine():
    from lorakit.inference.engine import Engine

    return Engine.load("qwen3-tiny-random", max_context=512)


def test_constrained_calls_are_always_valid_json(qwen_engine):
    """200 sampled answers under tool_choice required, through the engine's Sampler (temperature 1) on
    random logits over Qwen3's 151k-token vocabulary: every one is a well-formed call whose arguments fit
    the schema. Random logits, not a model, so the test is about the mask alone and takes seconds."""
    from lorakit.inference.constrained import Grammar, Lark, llg_tokenizer
    from lorakit.inference.decoding import Sampler, SamplingParams

    eng = qwen_engine
    # bounded, so every answer ends within the token budget (a free number or string under random
    # logits runs on for hundreds of tokens: valid so far, but cut off by the length limit)
    schema = {
        "type": "object",
        "properties": {
            "unit": {"type": "string", "enum": ["m", "ft", "kg"]},
            "n": {"type": "integer", "minimum": -99, "maximum": 999},
            "ok": {"type": "boolean"},
            "tag": {"type": "string", "maxLength": 3},
            "note": {"type": ["string", "null"], "enum": ['a"b', None]},
        },
        "required": ["unit", "n", "ok", "tag"],
        "additionalProperties": False,
    }
    tools = [
        {"type": "function", "function": {"name": "measure", "parameters": schema}},
        {
            "type": "function",
            "function": {
                "name": "noop",
                "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
            },
        },
    ]
    llg = llg_tokenizer(eng.tokenizer, eng.eos_ids)
    grammar = Grammar(
        "start: calls\n" + hermes.grammar(Lark(eng.tokenizer, llg), tools, parallel=False), llg, eng.eos_ids
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 150k-entry ops on a busy 2-core machine: one thread is 10x faster than two
    try:
        texts = []
        for seed in range(200):
            sampler = Sampler(
                SamplingParams(temperature=1.0, seed=seed, token_mask=grammar.mask), [1], eng.vocab_limit, "cpu"
            )
            noise, ids = torch.Generator().manual_seed(seed), []
            for _ in range(64):
                token = sampler.pick(torch.randn(eng.vocab_limit, generator=noise) * 4)
                if token in eng.eos_ids:
                    break
                ids.append(token)
            texts.append((eng.decode(ids), token in eng.eos_ids))
    finally:
        torch.set_num_threads(threads)
    for text, ended in texts:
        found = hermes.parse(text)
        assert found is not None and ended, text
        (call,) = found[1]
        validate(
            json.loads(call.arguments, parse_constant=lambda c: pytest.fail(c)),
            tools[call.name == "noop"]["function"]["parameters"],
        )
    assert len({t for t, _ in texts}) > 50  # sampled, not one answer 200 times ("noop" calls are all alike)


def test_mask_hook_bans_tokens(qwen_engine):
    from lorakit.inference.constrained import BanTokens
    from lorakit.inference.decoding import Sampler, SamplingParams

    logits = torch.zeros(qwen_engine.vocab_limit)
    logits[5] = 10.0
    sampler = Sampler(SamplingParams(temperature=0, token_mask=BanTokens([5])), [1], qwen_engine.vocab_limit, "cpu")
    assert sampler.pick(logits) != 5


# ---- requests against the app, with a scripted model ---------------------------------------------
@pytest.fixture(scope="module")
def caller(tokenizer):
    """The scripted server whose "thinker" adapter is replaced by a model that answers with a call."""
    import scripted_server

    saved = dict(scripted_server.REPLIES)
    scripted_server.REPLIES["thinker"] = "Checking.\n" + CALL
    scripted_server.REPLIES["shouty"] = CALL.replace("}}\n", "}\n")  # malformed: one brace short
    try:
        with running_server(tokenizer) as (url, model, state):
            state.engine.max_context = 1024  # the tool list alone is longer than the scripted 64 tokens
            model.tokenizer_text = lambda ids: tokenizer.decode(ids)
            SCRIPTED["model"] = model
            yield url
    finally:
        scripted_server.REPLIES.clear()
        scripted_server.REPLIES.update(saved)


def post(url, **body):
    base = {"messages": [{"role": "user", "content": "2+2?"}], "tools": [TOOL]}
    return http("POST", f"{url}/v1/chat/completions", base | body)


def test_call_text_becomes_tool_calls(caller):
    status, got, _ = post(caller, model="thinker")
    assert status == 200, got
    choice = got["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Checking."
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"] == {
        "name": "calculate",
        "arguments": '{"expression": "2 + 2"}',
    }


def test_malformed_call_comes_back_as_content(caller):
    for stream in (False, True):
        status, got, _ = post(caller, model="shouty", stream=stream)
        assert status == 200, got
        if not stream:
            choice = got["choices"][0]
            assert choice["message"]["tool_calls"] is None and choice["finish_reason"] == "stop"
            assert choice["message"]["content"] == CALL.replace("}}\n", "}\n")


def test_tool_history_renders_through_the_template(caller):
    call = {"id": "call_1", "type": "function", "function": {"name": "calculate", "arguments": '{"expression": "2+2"}'}}
    messages = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"result": 4}'},
    ]
    status, got, _ = post(caller, model="base-model", messages=messages)
    assert status == 200, got
    prompt = SCRIPTED["model"].tokenizer_text(SCRIPTED["model"].last_prompt)
    # Qwen3's template: the tool list in the system turn, the call as a Hermes block, the result as
    # a <tool_response> in a user turn
    assert '"name": "calculate"' in prompt and '{"name": "calculate", "arguments": {"expression": "2+2"}}' in prompt
    assert '<tool_response>\n{"result": 4}\n</tool_response>' in prompt
    bad_call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{x"}}
    bad = [dict(messages[1], tool_calls=[bad_call]), messages[2]]
    status, got, _ = post(caller, model="base-model", messages=[messages[0], *bad])
    assert status == 400 and got["error"]["param"] == "messages[1].tool_calls[0].function.arguments", got


@pytest.mark.parametrize("field", ["logit_bias", "functions", "reasoning_effort", "min_p"])
def test_unimplemented_field_is_a_400_naming_it(caller, field):
    status, got, _ = post(caller, model="base-model", **{field: 1})
    assert status == 400 and got["error"]["param"] == field and "does not implement" in got["error"]["message"]


def test_ignored_by_design_fields_are_taken(caller):
    status, got, _ = post(caller, model="base-model", user="u1", metadata={"k": "v"}, store=False)
    assert status == 200, got
    assert post(caller, model="base-model", store=True)[0] == 400


def test_bad_tool_requests_are_400s(caller):
    assert post(caller, model="base-model", tool_choice={"type": "function", "function": {"name": "nope"}})[0] == 400
    bad_schema = {"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}
    status, got, _ = post(caller, model="base-model", tools=[bad_schema])
    assert status == 400 and "tools.0.function" in got["error"]["message"], got


def test_template_without_tools_is_refused_naming_the_model():
    from lorakit import models

    smol = models.load_tokenizer(models.resolve_model("smollm2-135m-instruct"))
    with running_server(smol) as (url, _, _):
        status, got, _ = post(url, model="base-model")
    assert status == 400, got
    assert got["error"]["message"].startswith("base-model: cannot serve tools") and "\n" not in got["error"]["message"]
