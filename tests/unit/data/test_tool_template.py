"""Tool conversations through the model's own chat template: the tokens are apply_chat_template's, and
loss falls on exactly the assistant turns (content, call text, end of turn), never on results or tools.

Two tool-calling families on the real Qwen tokenizer (built offline): Qwen3's template (the built-in's
own) and a Qwen2.5-style template (qwen25_template.py: default system prompt, no thinking, calls after a
newline, arguments always through tojson).
"""

import copy
import json

import pytest
from qwen25_template import QWEN25_STYLE_TEMPLATE

from lorakit.data import Conversation, Message, tokenize_conversation
from lorakit.data.example_tools import SMOLLM2_TOOLS_TEMPLATE_FILE
from lorakit.data.formats import to_conversation
from lorakit.data.template import IGNORE, render_with_spans
from lorakit.data.tools import parse_hermes
from lorakit.errors import LorakitError

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_element",
            "description": "Look up an element.",
            "parameters": {"type": "object", "properties": {"element": {"type": "string"}}, "required": ["element"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "calculate",
            "description": "Evaluate arithmetic.",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            },
        },
    },
]


def call(ident, name, **args):
    return {"id": ident, "type": "function", "function": {"name": name, "arguments": args}}


SINGLE = [
    {"role": "user", "content": "Atomic number of iron?"},
    {"role": "assistant", "content": None, "tool_calls": [call("c0", "lookup_element", element="iron")]},
    {"role": "tool", "tool_call_id": "c0", "content": '{"atomic_number": 26}'},
    {"role": "assistant", "content": "Iron's atomic number is 26."},
]
# Parallel calls, then a second step whose turn has content before its call, then the answer.
MULTI = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Iron and copper masses, summed?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [call("a", "lookup_element", element="iron"), call("b", "lookup_element", element="copper")],
    },
    {"role": "tool", "tool_call_id": "a", "content": '{"atomic_mass": 55.845}'},
    {"role": "tool", "tool_call_id": "b", "content": '{"atomic_mass": 63.546}'},
    {
        "role": "assistant",
        "content": "Now the sum.",
        "tool_calls": [call("c", "calculate", expression="55.845 + 63.546")],
    },
    {"role": "tool", "tool_call_id": "c", "content": '{"result": 119.391}'},
    {"role": "assistant", "content": "Together 119.391."},
]
NO_CALL = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hello! How can I help?"}]


@pytest.fixture(scope="module")
def qwen25_tok(qwen3_tok):
    tok = copy.deepcopy(qwen3_tok)
    tok.chat_template = QWEN25_STYLE_TEMPLATE
    return tok


@pytest.fixture(params=["qwen3", "qwen25"])
def tok(request, qwen3_tok, qwen25_tok):
    return qwen3_tok if request.param == "qwen3" else qwen25_tok


def read(messages, tools=TOOLS):
    return to_conversation({"messages": messages, "tools": tools}, "t:1", "messages")


def reference_ids(tok, messages, tools=TOOLS, **kw):
    out = tok.apply_chat_template(messages, tools=tools, tokenize=True, **kw)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


@pytest.mark.parametrize(
    "messages",
    [SINGLE, MULTI, NO_CALL, SINGLE[:2]],
    ids=["single", "parallel+multi-step", "no-call", "ends-with-a-call"],
)
def test_tokens_equal_apply_chat_template_with_tools(tok, messages):
    out = tokenize_conversation(tok, read(messages))
    assert out["input_ids"] == reference_ids(tok, messages)
    if messages[-1] is SINGLE[1]:  # ends with the call: only it is trained
        trained = tok.decode([i for i, lab in zip(out["input_ids"], out["labels"]) if lab != IGNORE])
        assert trained == hermes("lookup_element", {"element": "iron"}) + "<|im_end|>"


def test_arguments_given_as_json_text_render_as_the_object(qwen25_tok):
    """Qwen2.5-style templates would quote a JSON string again; read arguments are objects, so both spellings
    give the tokens of the object form."""
    as_text = copy.deepcopy(SINGLE)
    as_text[1]["tool_calls"][0]["function"]["arguments"] = '{"element":"iron"}'
    out = tokenize_conversation(qwen25_tok, read(as_text))
    assert out["input_ids"] == reference_ids(qwen25_tok, SINGLE)


def pieces_ids(tok, pieces):
    ids, labels = [], []
    for text, trained in pieces:
        piece = tok.encode(text, add_special_tokens=False)
        ids += piece
        labels += piece if trained else [IGNORE] * len(piece)
    return ids, labels


def hermes(name, args):
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"


def tool_block(system):
    tools = "".join("\n" + json.dumps(t) for t in TOOLS)
    return (
        f"<|im_start|>system\n{system}# Tools\n\nYou may call one or more functions to assist with the user "
        "query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>"
        f"{tools}\n</tools>\n\nFor each function call, return a json object with function name and arguments "
        'within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
        "<args-json-object>}\n</tool_call><|im_end|>\n"
    )


def test_qwen3_mask_is_exactly_the_assistant_turns(qwen3_tok):
    results = "<|im_start|>user\n<tool_response>\n{}\n</tool_response>"
    ids, labels = pieces_ids(
        qwen3_tok,
        [
            (
                tool_block("Be brief.\n\n") + "<|im_start|>user\nIron and copper masses, summed?<|im_end|>\n"
                "<|im_start|>assistant\n",
                False,
            ),
            (
                hermes("lookup_element", {"element": "iron"})
                + "\n"
                + hermes("lookup_element", {"element": "copper"})
                + "<|im_end|>",
                True,
            ),
            (
                "\n" + results.format('{"atomic_mass": 55.845}') + '\n<tool_response>\n{"atomic_mass": 63.546}\n'
                "</tool_response><|im_end|>\n<|im_start|>assistant\n",
                False,
            ),
            ("Now the sum.\n" + hermes("calculate", {"expression": "55.845 + 63.546"}) + "<|im_end|>", True),
            (
                "\n"
                + results.format('{"result": 119.391}')
                + "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
                False,
            ),
            ("Together 119.391.<|im_end|>", True),
            ("\n", False),
        ],
    )
    out = tokenize_conversation(qwen3_tok, read(MULTI))
    assert (out["input_ids"], out["labels"]) == (ids, labels)


def test_qwen25_mask_is_exactly_the_assistant_turns(qwen25_tok):
    system = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n"
    ids, labels = pieces_ids(
        qwen25_tok,
        [
            (tool_block(system) + "<|im_start|>user\nAtomic number of iron?<|im_end|>\n<|im_start|>assistant\n", False),
            (hermes("lookup_element", {"element": "iron"}) + "<|im_end|>", True),
            (
                '\n<|im_start|>user\n<tool_response>\n{"atomic_number": 26}\n</tool_response><|im_end|>\n'
                "<|im_start|>assistant\n",
                False,
            ),
            ("Iron's atomic number is 26.<|im_end|>", True),
            ("\n", False),
        ],
    )
    out = tokenize_conversation(qwen25_tok, read(SINGLE))
    assert (out["input_ids"], out["labels"]) == (ids, labels)


def test_qwen3_thinking_on_trains_the_reasoning_before_a_call(qwen3_tok):
    messages = copy.deepcopy(SINGLE)
    messages[1]["reasoning_content"] = "I should look it up."
    out = tokenize_conversation(qwen3_tok, read(messages), thinking="on")
    assert out["input_ids"] == reference_ids(qwen3_tok, messages, enable_thinking=True)
    trained = qwen3_tok.decode([i for i, lab in zip(out["input_ids"], out["labels"]) if lab != IGNORE])
    assert trained == (
        "<think>\nI should look it up.\n</think>\n\n"
        + hermes("lookup_element", {"element": "iron"})
        + "<|im_end|><think>\n\n</think>\n\nIron's atomic number is 26.<|im_end|>"
    )


def test_the_trained_call_text_parses_back_to_the_calls(qwen3_tok):
    conv = read(MULTI)
    text, spans = render_with_spans(qwen3_tok, conv)
    turns = [m for m in conv.messages if m.role == "assistant"]
    for (a, b), m in zip(spans, turns):
        content, calls = parse_hermes(text[a:b].removesuffix("<|im_end|>"))
        assert content == m.content
        assert [(c.name, c.arguments) for c in calls] == [(c.name, c.arguments) for c in m.tool_calls]


def test_a_template_without_tools_is_refused_naming_the_model(smol_tok):
    with pytest.raises(
        LorakitError,
        match=r"smollm2-135m-instruct: cannot train on tool conversations: the "
        r"template never reads `tools`",
    ):
        tokenize_conversation(smol_tok, read(SINGLE))
    # a conversation without tools still trains on it
    plain = Conversation([Message("user", "Hi"), Message("assistant", "Hello")], "t:2")
    assert tokenize_conversation(smol_tok, plain)["input_ids"]


def test_a_template_that_drops_tool_calls_is_refused(qwen3_tok):
    tok = copy.deepcopy(qwen3_tok)
    tok.chat_template = (
        "{%- if tools %}{{- 'Tools: ' + (tools | tojson) + '\\n' }}{%- endif %}"
        "{%- for m in messages %}{{- '<|im_start|>' + m.role + '\\n' + (m.content or '') + "
        "'<|im_end|>\\n' }}{%- endfor %}"
    )
    with pytest.raises(LorakitError, match="renders the tool list but not the assistant's tool_calls"):
        tokenize_conversation(tok, read(SINGLE))


def test_smollm2_tools_template_keeps_smollm2_format_and_renders_tools(smol_tok):
    """lorakit's proposed tool template for SmolLM2: SmolLM2's own text without tools, Hermes calls with them."""
    tok = copy.deepcopy(smol_tok)
    tok.chat_template = SMOLLM2_TOOLS_TEMPLATE_FILE.read_text(encoding="utf-8")
    for messages in (NO_CALL, [{"role": "system", "content": "Be brief."}, *NO_CALL]):
        for prompt in (False, True):
            assert tok.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=prompt
            ) == smol_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
    conv = read(MULTI)
    out = tokenize_conversation(tok, conv)
    assert out["input_ids"] == reference_ids(tok, MULTI)
    text, spans = render_with_spans(tok, conv)
    assert [text[a:b] for a, b in spans] == [
        hermes("lookup_element", {"element": "iron"})
        + "\n"
        + hermes("lookup_element", {"element": "copper"})
        + "<|im_end|>",
        "Now the sum.\n" + hermes("calculate", {"expression": "55.845 + 63.546"}) + "<|im_end|>",
        "Together 119.391.<|im_end|>",
    ]
