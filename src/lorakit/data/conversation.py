"""The one internal conversation type every schema is converted into, and the problem type for bad records."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

# Roles a conversation may use after conversion; schema-specific spellings (human, gpt, ...) map onto these.
ROLES = ("system", "user", "assistant", "tool")


@dataclass
class ToolCall:
    """One function call of an assistant turn: `arguments` is always a parsed JSON object, never text."""

    id: str
    name: str
    arguments: dict

    def to_openai(self) -> dict:
        """The OpenAI `tool_calls` entry; arguments stay an object, which every chat template renders
        (Qwen2.5's and Llama 3.1's templates would quote a JSON string a second time)."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class Message:
    """One turn: `role` is one of ROLES; `reasoning` is the assistant's thinking, kept apart from `content`.

    An assistant turn may carry `tool_calls` (its `content` may then be empty); a tool turn carries the
    result in `content`, the `tool_call_id` of the call it answers (when the conversation made one) and
    the function `name` when the record gives it.
    """

    role: str
    content: str
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None


@dataclass
class Conversation:
    """A list of messages plus where it came from (`file:line`, or `file:row` for tables).

    `tools` are the functions the assistant may call, as OpenAI function schemas
    (`{"type": "function", "function": {"name", "description", "parameters"}}`); the chat template
    renders them into the prompt.
    """

    messages: list[Message]
    source: str = ""
    tools: list[dict] = field(default_factory=list)

    @property
    def has_reasoning(self) -> bool:
        """True when any assistant turn carries reasoning."""
        return any(m.reasoning for m in self.messages if m.role == "assistant")

    @property
    def has_tools(self) -> bool:
        """True when the conversation lists tools or any turn calls one."""
        return bool(self.tools) or any(m.tool_calls for m in self.messages)

    def key(self) -> str:
        """A canonical string of the messages and tools: equal keys mean exact duplicate conversations.

        A conversation without tools keeps the key it had before tools existed (prepared caches dedup on it).
        """
        rows: list = []
        for m in self.messages:
            row: list = [m.role, m.content, m.reasoning]
            if m.tool_calls or m.tool_call_id is not None or m.name is not None:
                row.append([[c.id, c.name, c.arguments] for c in m.tool_calls])
                row += [m.tool_call_id, m.name]
            rows.append(row)
        if self.tools:
            rows = [{"tools": self.tools}, *rows]
        return json.dumps(rows, ensure_ascii=False)


@dataclass
class Problem:
    """One thing wrong with the input, printed as `source: field: message` (field may be empty)."""

    source: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.field}: {self.message}" if self.field else f"{self.source}: {self.message}"


class RecordError(Exception):
    """Raised by a converter when a record is unusable; carries every problem found in that record."""

    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


@dataclass
class ScanResult:
    """What reading some data produced: the conversations, the problems (the first `kept`), per-file schema counts."""

    conversations: list[Conversation] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    bad_records: int = 0
    files: list[str] = field(default_factory=list)
    schemas: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def records(self) -> int:
        """Records seen: good ones plus those with at least one problem."""
        return len(self.conversations) + self.bad_records
