"""What every tool-call family shares: the parsed call, exact JSON for its arguments, and the stream splitter.

A family (hermes.py, ...) says how its model writes calls: the tag that opens one, how to parse the
finished text, and the grammar that makes the model write a valid one. Everything else is here.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Callable


@dataclass
class ParsedCall:
    """One call as OpenAI sends it: `arguments` is JSON text of an object."""

    id: str
    name: str
    arguments: str

    def to_openai(self, index: int | None = None) -> dict:
        out = {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}
        return out if index is None else {"index": index, **out}


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class _Number(str):
    """A JSON number kept as the model wrote it: 1E400 is valid JSON, but a Python float turns it into inf,
    which json.dumps would write as the invalid `Infinity`."""


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def loads_exact(text: str):
    """json.loads that keeps numbers as written and refuses NaN/Infinity (Python's json accepts them)."""
    return json.loads(text, parse_float=_Number, parse_int=_Number, parse_constant=_no_constant)


def dumps_exact(value) -> str:
    """JSON text of a `loads_exact` value, in the `tojson` style chat templates render (", " and ": ")."""
    if isinstance(value, _Number):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {dumps_exact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dumps_exact(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


@dataclass
class CallDelta:
    """A piece of a streamed call, as OpenAI streams one: first its id and name (arguments ""), then
    fragments of the arguments text; their concatenation is the call's final `arguments`."""

    index: int
    arguments: str
    id: str | None = None
    name: str | None = None

    def to_openai(self) -> dict:
        if self.id is None:
            return {"index": self.index, "function": {"arguments": self.arguments}}
        head = {"name": self.name, "arguments": self.arguments}
        return {"index": self.index, "id": self.id, "type": "function", "function": head}


@dataclass
class _LiveCall:
    """A call being streamed: where its text starts, and how much of its arguments has gone out."""

    body: int  # position in the stream's text right after the opening tag
    id: str | None = None
    name: str | None = None
    args: int = 0  # position of the arguments object's "{", once the head is read
    sent: str = ""  # arguments text sent so far
    end: int | None = None  # position after the arguments object's "}", once it closed


class CallStream:
    """Splits a streamed answer into content deltas and call deltas, ending where `parse` of the whole ends.

    Content flows out as it comes until the family's opening tag appears (a tail that could begin it is
    held back). From the tag on, each call goes out as it is written: its id and name once `head` reads
    them, then its arguments object as the tokens arrive (every character up to the object's closing
    brace is part of it, so nothing sent is ever taken back). At the end the whole text is parsed with
    the same `parse` as a whole answer: what was not streamed yet goes out then, and a malformed answer
    comes out as plain content (after call deltas already sent, if its head was well formed; its finish
    reason is then not "tool_calls", so clients do not act on it).
    """

    def __init__(
        self,
        open_tag: str,
        parse: Callable[[str], tuple[str, list[ParsedCall]] | None],
        head: Callable[[str], tuple[str, int] | None] | None = None,
    ):
        self.open_tag, self.parse, self.head = open_tag, parse, head
        self.text = ""
        self.sent = 0  # characters of self.text already sent as content
        self.in_call = False
        self.live: list[_LiveCall] = []
        self.calls: list[ParsedCall] = []  # the parsed calls, after the final feed

    def feed(self, text: str, final: bool = False) -> tuple[str, list[CallDelta]]:
        """(new content, call deltas)."""
        self.text += text
        out = ""
        if not self.in_call:
            at = self.text.find(self.open_tag, self.sent)
            if at >= 0:  # the content before the call goes now, less the newline that separates them
                self.in_call = True
                self.live.append(_LiveCall(at + len(self.open_tag)))
                end = at - 1 if at > self.sent and self.text[at - 1] == "\n" else at
            else:
                held = max(_held_tail(self.text, "\n" + self.open_tag), _held_tail(self.text, self.open_tag))
                end = len(self.text) - (0 if final else held)
            out, self.sent = self.text[self.sent : end], end
        deltas = self._advance() if self.in_call and self.head else []
        if not final:
            return out, deltas
        found = self.parse(self.text) if self.in_call else None
        if found is None:  # no call, or a malformed one: everything left is content
            out, self.sent = out + self.text[self.sent :], len(self.text)
            return out, deltas
        content, self.calls = found
        out, self.sent = out + content[self.sent :], len(self.text)
        return out, deltas + self._rest()

    def _advance(self) -> list[CallDelta]:
        """Deltas of the calls written so far: heads once readable, arguments up to what has arrived."""
        deltas = []
        while True:
            k, cur = len(self.live) - 1, self.live[-1]
            if cur.name is None:
                found = self.head(self.text[cur.body :])
                if found is None:
                    return deltas  # not readable yet (or never: then it all goes out at the end)
                cur.name, cur.args, cur.id = found[0], cur.body + found[1], new_call_id()
                deltas.append(CallDelta(k, "", cur.id, cur.name))
            cur.end = object_end(self.text, cur.args)
            fragment = self.text[cur.args + len(cur.sent) : cur.end or len(self.text)]
            if fragment:
                cur.sent += fragment
                deltas.append(CallDelta(k, fragment))
            if cur.end is None:
                return deltas
            at = self.text.find(self.open_tag, cur.end)
            if at < 0:
                return deltas
            self.live.append(_LiveCall(at + len(self.open_tag)))

    def _rest(self) -> list[CallDelta]:
        """What the parsed calls add to the streamed ones: the unsent arguments, and whole calls not streamed."""
        deltas = []
        for k, call in enumerate(self.calls):
            cur = self.live[k] if k < len(self.live) else None
            if cur is None or cur.name is None:
                deltas += [CallDelta(k, "", call.id, call.name), CallDelta(k, call.arguments)]
                continue
            call.id = cur.id  # the id the client already has
            # the parser keeps the arguments as written, so the streamed text is their start; a call
            # parsed from other text than was streamed keeps what was sent (its finish is still a call)
            if call.arguments.startswith(cur.sent) and call.arguments != cur.sent:
                deltas.append(CallDelta(k, call.arguments[len(cur.sent) :]))
        return deltas


def object_end(text: str, start: int) -> int | None:
    """Position after the JSON object that opens at `text[start]` ("{"), None while it is still open."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _held_tail(text: str, marker: str) -> int:
    """Length of the longest end of `text` that is a proper start of `marker`."""
    for k in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-k:]):
            return k
    return 0
