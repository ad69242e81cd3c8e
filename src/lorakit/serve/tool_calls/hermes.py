"""The Hermes form, as Qwen2.5 and Qwen3 write calls: `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`.

Parsing reuses the data stage's `parse_hermes` (one definition of a well-formed block for training,
eval and serving); the arguments are then re-read keeping numbers exactly as written.
"""

from __future__ import annotations

import json
import re

from lorakit.data.tools import HERMES_CLOSE, HERMES_OPEN, parse_hermes
from lorakit.serve.tool_calls.base import CallStream, ParsedCall, dumps_exact, loads_exact, new_call_id, object_end

NAME = "hermes"
OPEN_TAG = HERMES_OPEN
_BLOCK = re.compile(re.escape(HERMES_OPEN) + r"(.*?)" + re.escape(HERMES_CLOSE), re.DOTALL)
# The start of a block up to its arguments object: what a stream must see before it can name the call.
_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*(?=\{)')


def writes_this_form(template: str) -> bool:
    """True for chat templates that render assistant calls as Hermes blocks."""
    return HERMES_OPEN in template and HERMES_CLOSE in template


def parse(text: str) -> tuple[str, list[ParsedCall]] | None:
    """(content before the calls, calls); None when a block is malformed (the caller keeps the text as content)."""
    found = parse_hermes(text)
    if found is None:
        return None
    content, calls = found
    out = []
    for call, block in zip(calls, _BLOCK.finditer(text, text.find(HERMES_OPEN))):
        arguments = _written_arguments(block.group(1)) or _exact_arguments(block.group(1))
        if arguments is None:
            return None
        out.append(ParsedCall(new_call_id(), call.name, arguments))
    return content, out


def call_head(body: str) -> tuple[str, int] | None:
    """(function name, offset of the arguments object) once the start of a block's body reads
    `{"name": "...", "arguments": {`; None before that, or when the block is written another way."""
    m = _HEAD.match(body)
    if m is None:
        return None
    try:
        return json.loads(m.group(1)), m.end()
    except json.JSONDecodeError:
        return None


def _written_arguments(block: str) -> str | None:
    """The arguments object exactly as the model wrote it, when the block is `{"name": ..., "arguments":
    {...}}`: streaming sends that text as it comes, so the finished call must carry the same text."""
    head = call_head(block)
    end = object_end(block, head[1]) if head else None
    if end is None or block[end:].strip() != "}":
        return None
    try:
        loads_exact(block[head[1] : end])
    except ValueError:  # NaN or Infinity: not JSON, though Python's json took them
        return None
    return block[head[1] : end]


def _exact_arguments(block: str) -> str | None:
    try:
        obj = loads_exact(block)
        args = obj.get("arguments", obj.get("parameters", {}))
        if isinstance(args, str):  # some models write the arguments as JSON text
            args = loads_exact(args)
    except ValueError:  # NaN or Infinity: not JSON, though Python's json took them
        return None
    return dumps_exact(args) if isinstance(args, dict) else None


def stream() -> CallStream:
    return CallStream(HERMES_OPEN, parse, call_head)


def grammar(lark, tools: list[dict], parallel: bool) -> str:
    """Lark rules whose `calls` is one (or, with `parallel`, several) blocks calling one of `tools`."""
    rules, names = [], []
    for i, tool in enumerate(tools):
        fn = tool["function"]
        head = '{"name": ' + json.dumps(fn["name"]) + ', "arguments": '
        schema = fn.get("parameters") or {"type": "object"}
        rules.append(f'fn{i}: {json.dumps(head)} {lark.json(schema)} "}}"')
        names.append(f"fn{i}")
    call = f'call: {lark.text(HERMES_OPEN)} "\\n" ({" | ".join(names)}) "\\n" {lark.text(HERMES_CLOSE)}'
    calls = 'calls: call ("\\n" call)*' if parallel else "calls: call"
    return "\n".join([calls, call, *rules])
