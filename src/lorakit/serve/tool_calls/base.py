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


class CallStream:
    """Splits a streamed answer into content deltas and finished calls, exactly as `parse` splits the whole.

    Content flows out as it comes until the family's opening tag appears (a tail that could begin it is
    held back). From the tag on, the text is kept until the end, then parsed with the same `parse` as a
    whole answer: valid calls come out as calls, a malformed block as plain content.
    """

    def __init__(self, open_tag: str, parse: Callable[[str], tuple[str, list[ParsedCall]] | None]):
        self.open_tag, self.parse = open_tag, parse
        self.text = ""
        self.sent = 0  # characters of self.text already sent as content
        self.in_call = False

    def feed(self, text: str, final: bool = False) -> tuple[str, list[ParsedCall]]:
        """(new content, calls): calls only on the final feed."""
        self.text += text
        out = ""
        if not self.in_call:
            at = self.text.find(self.open_tag, self.sent)
            if at >= 0:  # the content before the call goes now, less the newline that separates them
                self.in_call = True
                end = at - 1 if at > self.sent and self.text[at - 1] == "\n" else at
            else:
                held = max(_held_tail(self.text, "\n" + self.open_tag), _held_tail(self.text, self.open_tag))
                end = len(self.text) - (0 if final else held)
            out, self.sent = self.text[self.sent : end], end
        if not final:
            return out, []
        found = self.parse(self.text) if self.in_call else None
        if found is None:  # no call, or a malformed one: everything left is content
            out, self.sent = out + self.text[self.sent :], len(self.text)
            return out, []
        content, calls = found
        out, self.sent = out + content[self.sent :], len(self.text)
        return out, calls


def _held_tail(text: str, marker: str) -> int:
    """Length of the longest end of `text` that is a proper start of `marker`."""
    for k in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-k:]):
            return k
    return 0
