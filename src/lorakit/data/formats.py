"""Record schemas (alpaca, ShareGPT, OpenAI messages, prompt/completion) converted into `Conversation`.

Every converter collects all problems of a record (field + what is wrong) before giving up, so
`lorakit data validate` can list them all; the order rules are checked once, on the converted turns.
Tool use is read from OpenAI messages (`tools`, assistant `tool_calls`, `tool` turns with
`tool_call_id`) and from ShareGPT's function-call form (`function_call` / `observation` turns and a
`tools` column); tools.py checks the calls against the tools.
"""

from __future__ import annotations

import json
from typing import Any

from lorakit.data import tools as toolkit
from lorakit.data.conversation import ROLES, Conversation, Message, Problem, RecordError

FORMATS = ("alpaca", "sharegpt", "messages", "prompt_completion")
CANONICAL = {
    "instruction",
    "input",
    "output",
    "system",
    "history",
    "conversations",
    "messages",
    "prompt",
    "completion",
    "reasoning_content",
    "tools",
}
# ShareGPT and other datasets spell roles many ways; these are the spellings we accept.
ROLE_ALIASES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "tool": "tool",
    "observation": "tool",
    "function": "tool",
    "ipython": "tool",
    "function_call": "assistant",  # ShareGPT (LLaMA-Factory): the value is the call(s) as JSON
}


def normalise_columns(columns: dict[str, str] | None) -> dict[str, str]:
    """Return a source->canonical rename map.

    `{question: instruction}` (source: canonical, as in our config) and `{instruction: question}`
    (canonical: source, as some other tools write it) both mean "read `question` as `instruction`".
    """
    out: dict[str, str] = {}
    for key, value in (columns or {}).items():
        if key in CANONICAL and value not in CANONICAL:
            out[value] = key
        else:
            out[key] = value
    return out


def rename(record: dict, columns: dict[str, str]) -> dict:
    """Apply a source->canonical rename map to a record's top-level keys."""
    if not columns:
        return record
    out = {k: v for k, v in record.items() if k not in columns}
    for src, dst in columns.items():
        if src in record:
            out[dst] = record[src]
    return out


def detect(record: dict) -> str | None:
    """Guess a record's schema from its keys; None when no schema fits."""
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    if "instruction" in record or "output" in record:
        return "alpaca"  # half an alpaca record: the converter names the missing field
    return None


def to_conversation(record: dict, source: str, fmt: str, system: str | None = None) -> Conversation:
    """Convert one record of schema `fmt` into a Conversation, or raise RecordError listing every problem."""
    problems: list[Problem] = []
    tools: list[dict] | None = []
    if not _absent(record.get("tools")):
        tools = toolkit.read_tools(record["tools"], "tools", source, problems)
    convert = {
        "alpaca": _alpaca,
        "sharegpt": _sharegpt,
        "messages": _messages,
        "prompt_completion": _prompt_completion,
    }[fmt]
    messages = convert(record, source, problems) if fmt == "alpaca" else convert(record, source, problems, tools)
    if not problems:
        messages = [_split_think(m, source, f"turn {i + 1}", problems) for i, m in enumerate(messages)]
    if not problems:
        _check_order(messages, source, problems)
    if problems:
        raise RecordError(problems)
    if system and messages[0].role != "system":
        messages.insert(0, Message("system", system))
    return Conversation(messages, source, tools or [])


def _absent(value: Any) -> bool:
    """No value: missing, null, an empty list, or (in a table cell) empty text or `[]`."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() in ("", "[]")
    return isinstance(value, (list, tuple)) and not value


def _as_list(value: Any, field: str, source: str, problems: list[Problem]) -> list | None:
    # CSV cells hold nested lists as JSON text.
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            problems.append(Problem(source, field, f"invalid JSON list: {e.msg}"))
            return None
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        problems.append(Problem(source, field, f"expected a list, found {_type(value)}"))
        return None
    return list(value)


def _type(value: Any) -> str:
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


def _text(record: dict, key: str, field: str, source: str, problems: list[Problem], required: bool) -> str | None:
    """A string field: missing/empty is an error only when required; any other type is always an error."""
    if key not in record or record[key] is None:
        if required:
            problems.append(Problem(source, field, "missing"))
        return None
    value = record[key]
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        value = _join_parts(value, field, source, problems)
        if value is None:
            return None
    if not isinstance(value, str):
        problems.append(Problem(source, field, f"expected a string, found {_type(value)}"))
        return None
    if _has_lone_surrogate(value, field, source, problems):
        return None
    if required and not value.strip():
        problems.append(Problem(source, field, "empty"))
        return None
    return value


def _has_lone_surrogate(value: str, field: str, source: str, problems: list[Problem]) -> bool:
    """JSON can spell half a UTF-16 pair ("\\ud800"), which is no Unicode text: tokenizers fail on it later."""
    try:
        value.encode("utf-8")
        return False
    except UnicodeEncodeError as e:
        problems.append(
            Problem(
                source,
                field,
                f"lone UTF-16 surrogate \\u{ord(value[e.start]):04x} at character "
                f"{e.start + 1}: not valid Unicode text; fix or drop that escape",
            )
        )
        return True


def _join_parts(parts: list[dict], field: str, source: str, problems: list[Problem]) -> str | None:
    """OpenAI content parts: text parts are joined; images and other parts cannot be trained on here."""
    texts = []
    for j, part in enumerate(parts):
        if part.get("type", "text") != "text" or not isinstance(part.get("text"), str):
            problems.append(
                Problem(source, f"{field}[{j}]", f"unsupported content part (type {part.get('type')!r}); only text")
            )
            return None
        texts.append(part["text"])
    return "".join(texts)


def _alpaca(record: dict, source: str, problems: list[Problem]) -> list[Message]:
    instruction = _text(record, "instruction", "instruction", source, problems, required=False)
    inp = _text(record, "input", "input", source, problems, required=False)
    output = _text(record, "output", "output", source, problems, required=True)
    system = _text(record, "system", "system", source, problems, required=False)
    if "instruction" not in record:
        problems.append(Problem(source, "instruction", "missing"))
    elif instruction is not None and not instruction.strip() and not (inp or "").strip():
        problems.append(Problem(source, "instruction", "empty (and no input)"))
    messages: list[Message] = []
    if system and system.strip():
        messages.append(Message("system", system))
    if "history" in record:
        history = _as_list(record["history"], "history", source, problems) or []
        for i, pair in enumerate(history):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                problems.append(Problem(source, f"history[{i}]", "expected a [question, answer] pair of strings"))
                continue
            if any(_has_lone_surrogate(x, f"history[{i}][{j}]", source, problems) for j, x in enumerate(pair)):
                continue
            messages += [Message("user", pair[0]), Message("assistant", pair[1])]
    # Alpaca joins instruction and input with a newline (the input is the material the instruction refers to).
    user = "\n".join(x for x in (instruction, inp) if x and x.strip())
    messages += [Message("user", user), Message("assistant", output or "")]
    return messages


def _turns(
    items: list,
    field: str,
    role_key: str,
    content_key: str,
    source: str,
    problems: list[Problem],
    tools: list[dict] | None,
) -> list[Message]:
    messages: list[Message] = []
    tracker = toolkit.CallTracker()
    for i, turn in enumerate(items):
        where = f"{field}[{i}]"
        if not isinstance(turn, dict):
            problems.append(Problem(source, where, f"expected an object, found {_type(turn)}"))
            continue
        # Accept both ShareGPT (from/value) and OpenAI (role/content) spellings in either schema.
        rk = role_key if role_key in turn else ("role" if "role" in turn else "from")
        ck = content_key if content_key in turn else ("content" if "content" in turn else "value")
        raw_role = turn.get(rk)
        if not isinstance(raw_role, str):
            problems.append(
                Problem(
                    source,
                    f"{where}.{rk}",
                    "missing" if raw_role is None else f"expected a string, found {_type(raw_role)}",
                )
            )
            continue
        role = ROLE_ALIASES.get(raw_role.strip().lower())
        if role is None:
            problems.append(
                Problem(
                    source,
                    f"{where}.{rk}",
                    f"unknown role {raw_role!r} (expected one of {', '.join(ROLES)} or human/gpt)",
                )
            )
            continue
        if raw_role.strip().lower() == "function_call":
            messages.append(_function_call_turn(turn.get(ck), f"{where}.{ck}", source, problems, tools, tracker))
            continue
        calls = _calls_of(turn, where, source, problems, tools, tracker) if role == "assistant" else None
        content = _text(
            turn,
            ck,
            f"{where}.{ck}",
            source,
            problems,
            required=role == "user" or (role == "assistant" and calls is None),
        )
        reasoning = None
        for rkey in ("reasoning_content", "reasoning", "thinking"):
            if turn.get(rkey) is not None:
                reasoning = _text(turn, rkey, f"{where}.{rkey}", source, problems, required=False)
                break
        if content is None and (role == "user" or (role == "assistant" and calls is None)):
            continue
        if role == "tool":
            messages += _tool_results(turn, content or "", where, source, problems, tracker)
            continue
        if not calls:
            tracker.other_turn()
        messages.append(Message(role, content or "", reasoning.strip("\n") if reasoning else None, calls or []))
    return messages


def _calls_of(
    turn: dict, where: str, source: str, problems: list[Problem], tools: list[dict] | None, tracker: toolkit.CallTracker
) -> list | None:
    """An OpenAI assistant turn's `tool_calls` (or legacy `function_call`); None when it makes no call."""
    if not _absent(turn.get("tool_calls")):
        items = _as_list(turn["tool_calls"], f"{where}.tool_calls", source, problems)
        fields = [f"{where}.tool_calls[{k}]" for k in range(len(items or []))]
    elif isinstance(turn.get("function_call"), dict):
        items, fields = [turn["function_call"]], [f"{where}.function_call"]
    else:
        return None
    return _register(items or [], fields, source, problems, tools, tracker)


def _register(
    items: list,
    fields: list[str],
    source: str,
    problems: list[Problem],
    tools: list[dict] | None,
    tracker: toolkit.CallTracker,
) -> list:
    found, good_fields = [], []
    for obj, where in zip(items, fields):
        call = toolkit.read_call(obj, where, source, problems)
        if call is None:
            tracker.unreadable_call(obj)
            continue
        fwhere = f"{where}.function" if isinstance(obj, dict) and "function" in obj else where
        toolkit.check_call(call[1], call[2], tools, fwhere, source, problems)
        found.append(call)
        good_fields.append(where)
    return tracker.add(found, good_fields, source, problems)


def _function_call_turn(
    value, where: str, source: str, problems: list[Problem], tools: list[dict] | None, tracker: toolkit.CallTracker
) -> Message:
    """ShareGPT's `function_call` turn: its value is one call, or a list of parallel calls, as JSON."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            problems.append(Problem(source, where, f"not JSON: {e.msg} at character {e.pos + 1}"))
            return Message("assistant", "")
    items = value if isinstance(value, list) else [value]
    fields = [f"{where}[{k}]" for k in range(len(items))] if isinstance(value, list) else [where]
    before = len(problems)
    calls = _register(items, fields, source, problems, tools, tracker)
    if not calls and len(problems) == before:
        problems.append(Problem(source, where, "a function_call turn without a call"))
    return Message("assistant", "", tool_calls=calls)


def _tool_results(
    turn: dict, content: str, where: str, source: str, problems: list[Problem], tracker: toolkit.CallTracker
) -> list[Message]:
    """One tool turn's result(s), each matched to the call it answers.

    ShareGPT (LLaMA-Factory) keeps turns alternating, so the results of n parallel calls come as one
    observation holding a JSON list of n results; those become n tool turns.
    """
    pending = len(tracker.pending)
    if turn.get("tool_call_id") is None and pending > 1 and content.lstrip().startswith("["):
        try:
            parts = json.loads(content)
        except json.JSONDecodeError:
            parts = None
        if isinstance(parts, list) and len(parts) == pending:
            texts = [p if isinstance(p, str) else json.dumps(p, ensure_ascii=False) for p in parts]
            return [_result(None, None, t, where, source, problems, tracker) for t in texts]
    return [_result(turn.get("tool_call_id"), turn.get("name"), content, where, source, problems, tracker)]


def _result(
    tool_call_id, name, content: str, where: str, source: str, problems: list[Problem], tracker: toolkit.CallTracker
) -> Message:
    call = tracker.answer(tool_call_id, where, source, problems)
    if name is not None and not isinstance(name, str):
        problems.append(Problem(source, f"{where}.name", f"expected a string, found {_type(name)}"))
        name = None
    # `name` stays as the record wrote it (OpenAI's tool turns have none): a template that renders it
    # must get what the data says; the call it answers is known through tool_call_id anyway.
    return Message("tool", content, tool_call_id=call.id if call else None, name=name)


def _sharegpt(record: dict, source: str, problems: list[Problem], tools: list[dict] | None) -> list[Message]:
    items = _as_list(record["conversations"], "conversations", source, problems)
    if items is None:
        return []
    messages = _turns(items, "conversations", "from", "value", source, problems, tools)
    system = _text(record, "system", "system", source, problems, required=False)
    if system and system.strip() and not (messages and messages[0].role == "system"):
        messages.insert(0, Message("system", system))
    return messages


def _messages(record: dict, source: str, problems: list[Problem], tools: list[dict] | None) -> list[Message]:
    items = _as_list(record["messages"], "messages", source, problems)
    if items is None:
        return []
    return _turns(items, "messages", "role", "content", source, problems, tools)


def _prompt_completion(record: dict, source: str, problems: list[Problem], tools: list[dict] | None) -> list[Message]:
    messages: list[Message] = []
    system = _text(record, "system", "system", source, problems, required=False)
    if system and system.strip():
        messages.append(Message("system", system))
    for key, role in (("prompt", "user"), ("completion", "assistant")):
        value = record.get(key)
        # TRL's conversational form: prompt and completion are themselves lists of messages.
        if (
            isinstance(value, (list, tuple))
            and value
            and isinstance(value[0], dict)
            and ("role" in value[0] or "from" in value[0])
        ):
            messages += _turns(list(value), key, "role", "content", source, problems, tools)
        else:
            text = _text(record, key, key, source, problems, required=True)
            messages.append(Message(role, text or ""))
    return messages


def _split_think(m: Message, source: str, where: str, problems: list[Problem]) -> Message:
    """Move a leading `<think>...</think>` block of an assistant message into `reasoning`."""
    if m.role != "assistant":
        return m
    content = m.content
    if "</think>" in content:
        head, _, tail = content.partition("</think>")
        if head.strip() and "<think>" not in head:
            problems.append(Problem(source, where, "'</think>' without an opening '<think>' at the start"))
            return m
        reasoning = head.split("<think>", 1)[-1].strip("\n")
        # An explicit reasoning field wins over an inline block; the block is removed from the answer either way.
        return Message("assistant", tail.lstrip("\n"), m.reasoning or (reasoning or None), m.tool_calls)
    if "<think>" in content:
        problems.append(Problem(source, where, "'<think>' is never closed with '</think>'"))
    return m


def _check_order(messages: list[Message], source: str, problems: list[Problem]) -> None:
    if not any(m.role == "assistant" for m in messages):
        problems.append(Problem(source, "", "no assistant turn: nothing to learn from"))
        return
    prev = None
    for i, m in enumerate(messages):
        if m.role == "system":
            if i != 0:
                problems.append(
                    Problem(source, f"turn {i + 1}", "turns out of order: a system turn may only come first")
                )
        elif m.role == "user":
            if prev == "user":
                problems.append(Problem(source, f"turn {i + 1}", "turns out of order: two user turns in a row"))
        elif m.role == "assistant":
            if prev not in ("user", "tool"):
                problems.append(
                    Problem(
                        source,
                        f"turn {i + 1}",
                        "turns out of order: an assistant turn must follow a user (or tool) turn",
                    )
                )
            elif not m.content.strip() and not (m.reasoning or "").strip() and not m.tool_calls:
                problems.append(Problem(source, f"turn {i + 1}", "empty assistant answer"))
        elif m.role == "tool" and prev not in ("assistant", "tool"):
            problems.append(
                Problem(source, f"turn {i + 1}", "turns out of order: a tool turn must follow an assistant turn")
            )
        prev = m.role
    if messages[-1].role != "assistant":
        problems.append(Problem(source, f"turn {len(messages)}", "the conversation must end with an assistant turn"))
