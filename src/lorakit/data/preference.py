"""Preference records: pairs (a prompt, a chosen and a rejected answer) and KTO's unpaired answers.

The forms read, per record:
- `prompt` / `chosen` / `rejected` as strings (TRL's standard form), with an optional `system`;
- `chosen` / `rejected` as message lists holding the whole conversation (UltraFeedback-binarized): the
  prompt is the messages both sides share (an explicit `prompt`, string or list, may also be given);
- ShareGPT (LLaMA-Factory): `conversations` holds the prompt turns, `chosen` / `rejected` one message
  object each (`{"from": "gpt", "value": ...}`), with an optional `system`;
- unpaired (KTO): `prompt` + `completion` + a boolean `label` (true = desirable).

Every problem is reported as `file:line: field: what` (lorakit.data.conversation.Problem), as for SFT.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from lorakit.data import formats
from lorakit.data.conversation import Message, Problem, RecordError
from lorakit.data.readers import iter_records, resolve_paths
from lorakit.errors import LorakitError


@dataclass
class Preference:
    """A pair: the shared prompt turns, then the chosen and the rejected completion (assistant turns)."""

    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]
    source: str = ""

    def key(self) -> str:
        rows = [[[m.role, m.content, m.reasoning] for m in part] for part in (self.prompt, self.chosen, self.rejected)]
        return repr(rows)


@dataclass
class Unpaired:
    """KTO's form: one completion of a prompt and whether it is desirable."""

    prompt: list[Message]
    completion: list[Message]
    label: bool
    source: str = ""


def record_kind(record: dict) -> str | None:
    """ "pair" or "unpaired" when a record is in a preference form, else None (an SFT record)."""
    if "chosen" in record or "rejected" in record:  # one side missing is a broken pair, named as such
        return "pair"
    if "completion" in record and "label" in record:
        return "unpaired"
    return None


def _is_messages(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and isinstance(value[0], dict)


def _side(record: dict, key: str, source: str, problems: list[Problem]) -> list[Message] | None:
    """One completion (or prompt): a string is one turn (assistant for completions, user for a prompt),
    a message object one turn, a list of message objects as many."""
    value = record.get(key)
    role = "user" if key == "prompt" else "assistant"
    if value is None:
        problems.append(Problem(source, key, "missing"))
        return None
    if isinstance(value, dict):
        value = [value]
    if _is_messages(value):
        return formats._turns(list(value), key, "role", "content", source, problems, None)
    text = formats._text(record, key, key, source, problems, required=True)
    return None if text is None else [Message(role, text)]


def to_preference(record: dict, source: str, system: str | None = None) -> Preference:
    """One pair record (any of the module's forms) as a Preference, or RecordError with every problem."""
    problems: list[Problem] = []
    prompt: list[Message] | None = []
    if "conversations" in record:  # LLaMA-Factory's ShareGPT pairs
        prompt = formats._sharegpt(record, source, problems, None)
    elif "prompt" in record:
        prompt = _side(record, "prompt", source, problems)
        sys_text = formats._text(record, "system", "system", source, problems, required=False)
        if prompt is not None and sys_text and sys_text.strip() and (not prompt or prompt[0].role != "system"):
            prompt.insert(0, Message("system", sys_text))
    chosen, rejected = _side(record, "chosen", source, problems), _side(record, "rejected", source, problems)
    if problems or prompt is None or chosen is None or rejected is None:
        raise RecordError(problems or [Problem(source, "", "unreadable pair")])
    if not prompt:  # UltraFeedback: both sides are whole conversations; the prompt is what they share
        prompt, chosen, rejected = _split_shared(chosen, rejected, source, problems)
        if problems:
            raise RecordError(problems)
    pair = Preference(prompt, chosen, rejected, source)
    _check_pair(pair, problems)
    if problems:
        raise RecordError(problems)
    pair.chosen = [formats._split_think(m, source, "chosen", problems) for m in pair.chosen]
    pair.rejected = [formats._split_think(m, source, "rejected", problems) for m in pair.rejected]
    if problems:
        raise RecordError(problems)
    if system and pair.prompt[0].role != "system":
        pair.prompt.insert(0, Message("system", system))
    return pair


def _split_shared(
    chosen: list[Message], rejected: list[Message], source: str, problems: list[Problem]
) -> tuple[list[Message], list[Message], list[Message]]:
    """(shared prefix, chosen rest, rejected rest). The rests must start at an assistant turn: a prefix
    that stops in the prompt turns means the two sides were asked different things."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    while n and chosen[n - 1].role == "assistant":  # a shared assistant opening is still an answer
        n -= 1
    first_answer = [
        next((i for i, m in enumerate(side) if m.role == "assistant"), len(side)) for side in (chosen, rejected)
    ]
    if n < max(first_answer):
        problems.append(
            Problem(
                source,
                "chosen/rejected",
                "the prompt differs between chosen and rejected "
                f"(they first differ at turn {n + 1}); a pair must answer the same prompt",
            )
        )
    return chosen[:n], chosen[n:], rejected[n:]


def _check_pair(pair: Preference, problems: list[Problem]) -> None:
    src = pair.source
    if not pair.prompt or not any(m.role == "user" for m in pair.prompt):
        problems.append(Problem(src, "prompt", "no user turn: a pair needs a prompt to answer"))
    for name, side in (("chosen", pair.chosen), ("rejected", pair.rejected)):
        if not side or not "".join(m.content + (m.reasoning or "") for m in side).strip():
            problems.append(Problem(src, name, "empty"))
        elif side[0].role != "assistant":
            problems.append(Problem(src, name, f"must start with an assistant answer, found a {side[0].role} turn"))
    if not problems and [(m.role, m.content) for m in pair.chosen] == [(m.role, m.content) for m in pair.rejected]:
        problems.append(Problem(src, "chosen", "equal to rejected: the pair prefers nothing"))


def to_unpaired(record: dict, source: str, system: str | None = None) -> Unpaired:
    """One KTO record (`prompt`, `completion`, boolean `label`) as Unpaired, or RecordError."""
    problems: list[Problem] = []
    prompt, completion = _side(record, "prompt", source, problems), _side(record, "completion", source, problems)
    label = record.get("label")
    if not isinstance(label, bool):
        problems.append(Problem(source, "label", f"expected true or false, found {formats._type(label)}"))
    if problems or prompt is None or completion is None:
        raise RecordError(problems or [Problem(source, "", "unreadable record")])
    if not "".join(m.content for m in completion).strip():
        raise RecordError([Problem(source, "completion", "empty")])
    if system and prompt[0].role != "system":
        prompt.insert(0, Message("system", system))
    return Unpaired(prompt, completion, label, source)


def iter_preferences(
    paths: str | list[str], columns: dict[str, str] | None = None, system: str | None = None, kind: str = "pair"
) -> Iterator[Preference | Unpaired | Problem]:
    """Every record under `paths` as a Preference (kind "pair") or Unpaired ("unpaired"), or a Problem."""
    rename = formats.normalise_columns(columns)
    convert = to_preference if kind == "pair" else to_unpaired
    for path in resolve_paths(paths):
        for item in iter_records(path):
            if isinstance(item, Problem):
                yield item
                continue
            source, record = item
            record = formats.rename(record, rename)
            found = record_kind(record)
            if found != kind:
                yield Problem(source, "", _wrong_form(found, kind, record))
                continue
            try:
                yield convert(record, source, system)
            except RecordError as e:
                yield from e.problems


def _wrong_form(found: str | None, wanted: str, record: dict) -> str:
    keys = ", ".join(sorted(map(str, record))[:8]) or "none"
    if found is None:
        return (
            f"not a preference record (keys: {keys}): train.method {'dpo' if wanted == 'pair' else 'kto'} "
            f"reads {'chosen/rejected pairs' if wanted == 'pair' else 'prompt/completion/label records'}; "
            "for conversations set train.method=sft"
        )
    return f"an {found} preference record (keys: {keys}) where {wanted} records are expected"


def load_preferences(
    paths: str | list[str], columns: dict[str, str] | None = None, system: str | None = None, kind: str = "pair"
) -> list:
    """Every record, stopping at the first problem with a one-line LorakitError naming file:line: field."""
    out = []
    for item in iter_preferences(paths, columns, system, kind):
        if isinstance(item, Problem):
            raise LorakitError(f"{item} (run `lorakit data validate` to list every problem)")
        out.append(item)
    if not out:
        raise LorakitError(f"{paths}: no records found")
    return out


def refusal_for_sft(record: dict) -> str | None:
    """Why an SFT run cannot read this record (a preference form), in one line; None for SFT records."""
    kind = record_kind(record)
    if kind is None:
        return None
    keys = ", ".join(sorted(map(str, record))[:8])
    what = "a preference pair" if kind == "pair" else "an unpaired preference record (KTO)"
    return (
        f"{what} (keys: {keys}); train.method sft trains on conversations: set train.method=dpo for pairs "
        "or use an SFT file"
    )


def files_of(paths: str | list[str]) -> list[Path]:
    return resolve_paths(paths)
