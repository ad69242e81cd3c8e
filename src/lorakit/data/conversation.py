"""The one internal conversation type every schema is converted into, and the problem type for bad records."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

# Roles a conversation may use after conversion; schema-specific spellings (human, gpt, ...) map onto these.
ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Message:
    """One turn: `role` is one of ROLES; `reasoning` is the assistant's thinking, kept apart from `content`."""

    role: str
    content: str
    reasoning: str | None = None


@dataclass
class Conversation:
    """A list of messages plus where it came from (`file:line`, or `file:row` for tables)."""

    messages: list[Message]
    source: str = ""

    @property
    def has_reasoning(self) -> bool:
        """True when any assistant turn carries reasoning."""
        return any(m.reasoning for m in self.messages if m.role == "assistant")

    def key(self) -> str:
        """A canonical string of the messages: equal keys mean exact duplicate conversations."""
        return json.dumps([[m.role, m.content, m.reasoning] for m in self.messages], ensure_ascii=False)


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
