"""Tools in conversations: function schemas, tool calls checked against them, and Hermes `<tool_call>` text.

Reading (used by formats.py) collects every problem as `field: what`, like the rest of the data stage:
- `read_tools`: OpenAI function schemas, or bare `{name, description, parameters}` objects (ShareGPT's
  `tools` column, which may also be JSON text); stored in the OpenAI form chat templates expect;
- `read_call`: an OpenAI `tool_calls` entry or a bare `{name, arguments}` object; `arguments` may be an
  object or JSON text of one, and is kept parsed, so every template renders it the same way;
- `check_call`: the function is one of the tools and its arguments are valid against its JSON Schema;
- `CallTracker`: matches each tool result to the call it answers (by `tool_call_id`, else by position).

The Hermes form (`<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`) is what Qwen2.5 and
Qwen3 write; `hermes_text` and `parse_hermes` turn calls into that text and back (the server and eval
parse model output with the latter).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from lorakit.data.conversation import Problem, ToolCall

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"


def call_id(n: int) -> str:
    """The id given to the n-th call (0-based) of a conversation that did not name its calls."""
    return f"call_{n}"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        str: "a string",
        dict: "an object",
        list: "a list",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


def _json_text(value: Any, field: str, source: str, problems: list[Problem]) -> tuple[bool, Any]:
    """Parse `value` when it is JSON text (tables and ShareGPT keep nested data as text); (ok, value)."""
    if not isinstance(value, str):
        return True, value.tolist() if hasattr(value, "tolist") else value
    try:
        return True, json.loads(value)
    except json.JSONDecodeError as e:
        problems.append(Problem(source, field, f"not JSON: {e.msg} at character {e.pos + 1}"))
        return False, None


def read_tools(value: Any, field: str, source: str, problems: list[Problem]) -> list[dict] | None:
    """The tool list in OpenAI form, or None when any tool is unusable (then calls are not checked against it)."""
    ok, value = _json_text(value, field, source, problems)
    if not ok:
        return None
    if not isinstance(value, (list, tuple)):
        problems.append(Problem(source, field, f"expected a list of tools, found {_kind(value)}"))
        return None
    before = len(problems)
    tools, names = [], set()
    for j, item in enumerate(value):
        tool = _read_tool(item, f"{field}[{j}]", source, problems)
        if tool is None:
            continue
        name = tool["function"]["name"]
        if name in names:
            problems.append(Problem(source, f"{field}[{j}].name", f"two tools are named {name!r}"))
        names.add(name)
        tools.append(tool)
    return tools if len(problems) == before else None


def _read_tool(item: Any, where: str, source: str, problems: list[Problem]) -> dict | None:
    ok, item = _json_text(item, where, source, problems)
    if not ok:
        return None
    if not isinstance(item, dict):
        problems.append(Problem(source, where, f"expected a tool object, found {_kind(item)}"))
        return None
    fn, fwhere = item, where
    if "function" in item:
        if item.get("type", "function") != "function":
            problems.append(
                Problem(source, f"{where}.type", f"unsupported tool type {item.get('type')!r}; only 'function'")
            )
            return None
        fn, fwhere = item["function"], f"{where}.function"
        if not isinstance(fn, dict):
            problems.append(Problem(source, fwhere, f"expected an object, found {_kind(fn)}"))
            return None
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(
            Problem(
                source,
                f"{fwhere}.name",
                "missing"
                if name is None
                else "empty"
                if isinstance(name, str)
                else f"expected a string, found {_kind(name)}",
            )
        )
        return None
    if "parameters" in fn:
        why = schema_problem(fn["parameters"])
        if why:
            problems.append(Problem(source, f"{fwhere}.parameters", f"not a JSON Schema object: {why}"))
            return None
    return {"type": "function", "function": dict(fn)}


def schema_problem(schema: Any) -> str | None:
    """Why `schema` cannot describe a function's arguments, or None when it can."""
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    if not isinstance(schema, dict):
        return f"expected an object, found {_kind(schema)}"
    if schema.get("type", "object") != "object":
        return f"arguments are an object, so its type must be 'object', not {schema.get('type')!r}"
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as e:
        where = f" at {e.json_path}" if list(e.path) else ""
        return f"{e.message}{where}"
    return None


def tool_names(tools: list[dict]) -> list[str]:
    return [t["function"]["name"] for t in tools]


def tool_schema(tools: list[dict], name: str) -> dict | None:
    """The `parameters` schema of tool `name` ({} when it declares none); None when there is no such tool."""
    for t in tools:
        if t["function"]["name"] == name:
            return t["function"].get("parameters") or {}
    return None


def read_call(obj: Any, where: str, source: str, problems: list[Problem]) -> tuple[str | None, str, Any] | None:
    """(id or None, name, parsed arguments) of one call; `where` names the call object for problems.

    Accepts OpenAI's `{id, type, function: {name, arguments}}` and the bare `{name, arguments}`
    (ShareGPT's function_call turns, OpenAI's legacy `function_call`).
    """
    if not isinstance(obj, dict):
        problems.append(Problem(source, where, f"expected a call object, found {_kind(obj)}"))
        return None
    fn, fwhere = obj, where
    if "function" in obj:
        fn, fwhere = obj["function"], f"{where}.function"
        if not isinstance(fn, dict):
            problems.append(Problem(source, fwhere, f"expected an object, found {_kind(fn)}"))
            return None
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(
            Problem(
                source,
                f"{fwhere}.name",
                "missing" if name is None else f"expected a function name, found {_kind(name)}",
            )
        )
        return None
    ident = obj.get("id")
    if ident is not None and not isinstance(ident, str):
        problems.append(Problem(source, f"{where}.id", f"expected a string, found {_kind(ident)}"))
        return None
    if "arguments" not in fn:
        problems.append(Problem(source, f"{fwhere}.arguments", "missing"))
        return None
    args = fn["arguments"]
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError as e:
            problems.append(Problem(source, f"{fwhere}.arguments", f"not JSON: {e.msg} at character {e.pos + 1}"))
            return None
    if not isinstance(args, dict):
        problems.append(Problem(source, f"{fwhere}.arguments", f"expected a JSON object, found {_kind(args)}"))
        return None
    return ident, name, args


def check_call(
    name: str, arguments: dict, tools: list[dict] | None, where: str, source: str, problems: list[Problem]
) -> None:
    """A problem when the function is not among `tools` or `arguments` break its schema (None: not checked)."""
    if tools is None:
        return
    schema = tool_schema(tools, name)
    if schema is None:
        listed = ", ".join(tool_names(tools)) or "none: the record has no tools"
        problems.append(Problem(source, f"{where}.name", f"calls {name!r}, which is not in tools ({listed})"))
        return
    why = arguments_problem(arguments, schema)
    if why:
        problems.append(Problem(source, f"{where}.arguments", f"do not fit the schema of {name!r}: {why}"))


def arguments_problem(arguments: dict, schema: dict) -> str | None:
    """The most relevant reason `arguments` are invalid under `schema`, or None when they are valid."""
    from jsonschema.exceptions import best_match
    from jsonschema.validators import validator_for

    error = best_match(validator_for(schema)(schema).iter_errors(arguments))
    if error is None:
        return None
    if error.validator == "required":
        missing = [k for k in error.validator_value if isinstance(error.instance, dict) and k not in error.instance]
        where = f" in {error.json_path}" if list(error.path) else ""
        return f"missing required parameter {missing[0]!r}{where}" if missing else error.message
    where = f"{error.json_path.removeprefix('$.')}: " if list(error.path) else ""
    return f"{where}{error.message}"


class CallTracker:
    """Follows one conversation's calls, so each tool result is matched to the call it answers.

    A result names its call by `tool_call_id`; a result without one answers the next unanswered call
    of the assistant turn before it (ShareGPT's observations and many OpenAI exports carry no ids).
    Calls without an id get `call_0`, `call_1`, ... in conversation order.
    """

    def __init__(self):
        self.calls: dict[str, ToolCall] = {}
        self.pending: list[ToolCall] = []
        self.count = 0
        self.unreadable: set[str] = set()  # ids of calls already reported as bad: their results are not

    def unreadable_call(self, obj: Any) -> None:
        """A call that could not be read: a result naming its id is not a second problem."""
        if isinstance(obj, dict) and isinstance(obj.get("id"), str):
            self.unreadable.add(obj["id"])

    def add(
        self, found: list[tuple[str | None, str, dict]], where: list[str], source: str, problems: list[Problem]
    ) -> list[ToolCall]:
        """Register one assistant turn's calls (id, name, arguments); returns them as ToolCalls."""
        calls = []
        for (ident, name, args), field in zip(found, where):
            if ident is None:
                ident = call_id(self.count)
                while ident in self.calls:  # a record may name its own calls call_0, ...
                    self.count += 1
                    ident = call_id(self.count)
            elif ident in self.calls:
                problems.append(Problem(source, f"{field}.id", f"two calls have the id {ident!r}"))
            self.count += 1
            call = ToolCall(ident, name, args)
            self.calls[ident] = call
            calls.append(call)
        self.pending = list(calls)
        return calls

    def answer(self, tool_call_id: Any, where: str, source: str, problems: list[Problem]) -> ToolCall | None:
        """The call a tool result answers (None when the conversation made no call to answer)."""
        if tool_call_id is None:
            return self.pending.pop(0) if self.pending else None
        if isinstance(tool_call_id, str) and tool_call_id in self.unreadable:
            return None
        if not isinstance(tool_call_id, str) or tool_call_id not in self.calls:
            known = ", ".join(self.calls) or "none"
            problems.append(
                Problem(source, f"{where}.tool_call_id", f"{tool_call_id!r} matches no call before it (calls: {known})")
            )
            return None
        call = self.calls[tool_call_id]
        if call in self.pending:
            self.pending.remove(call)
        return call

    def other_turn(self) -> None:
        """A user or plain assistant turn: results after it no longer answer earlier calls by position."""
        self.pending = []


def hermes_text(calls: list[ToolCall]) -> str:
    """The calls as Qwen2.5/Qwen3 write them: one `<tool_call>` block per call, joined by newlines."""
    return "\n".join(
        f"{HERMES_OPEN}\n{json.dumps({'name': c.name, 'arguments': c.arguments}, ensure_ascii=False)}\n{HERMES_CLOSE}"
        for c in calls
    )


_HERMES_BLOCK = re.compile(re.escape(HERMES_OPEN) + r"(.*?)" + re.escape(HERMES_CLOSE), re.DOTALL)


def parse_hermes(text: str, make_id: Callable[[int], str] = call_id) -> tuple[str, list[ToolCall]] | None:
    """Split model text into (content before the calls, calls); None when a `<tool_call>` block is malformed.

    Text without `<tool_call>` is all content. A malformed block (not JSON, no name, arguments not an
    object, an unclosed tag, or text after the calls) gives None, so a caller can return the text as
    plain content instead of guessing.
    """
    first = text.find(HERMES_OPEN)
    if first < 0:
        return text, []
    content = text[:first]
    content = content.removesuffix("\n")  # the template's separator, not content
    calls, pos = [], first
    for match in _HERMES_BLOCK.finditer(text, first):
        if text[pos : match.start()].strip():
            return None
        try:
            obj = json.loads(match.group(1))
        except json.JSONDecodeError:
            return None
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return None
        args = obj.get("arguments", obj.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return None
        if not isinstance(args, dict):
            return None
        calls.append(ToolCall(make_id(len(calls)), obj["name"], args))
        pos = match.end()
    if not calls or text[pos:].strip():
        return None
    return content, calls
