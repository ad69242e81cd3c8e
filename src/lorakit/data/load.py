"""Read data paths into conversations: `scan` collects every problem, `load_conversations` stops at the first."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from lorakit.data import formats
from lorakit.data.conversation import Conversation, Problem, RecordError, ScanResult
from lorakit.data.readers import iter_records, resolve_paths
from lorakit.errors import LorakitError

_RECORD_SOURCE = re.compile(r":#?\d+$")


def _check_format(format: str) -> None:
    if format != "auto" and format not in formats.FORMATS:
        raise LorakitError(f"data.format: unknown format {format!r} (expected auto, {', '.join(formats.FORMATS)})")


def iter_conversations(files: list[Path], format: str = "auto", columns: dict[str, str] | None = None,
                       system: str | None = None, schemas: dict | None = None) -> Iterator[Conversation | Problem]:
    """Yield a Conversation per good record and a Problem per thing wrong, file by file, in order."""
    _check_format(format)
    rename = formats.normalise_columns(columns)
    for path in files:
        counts = schemas.setdefault(str(path), {}) if schemas is not None else {}
        for item in iter_records(path):
            if isinstance(item, Problem):
                yield item
                continue
            source, record = item
            record = formats.rename(record, rename)
            fmt = format if format != "auto" else formats.detect(record)
            if fmt is None:
                keys = ", ".join(sorted(map(_printable, record))[:8]) or "none"
                yield Problem(source, "", f"unknown schema (keys: {keys}); expected alpaca (instruction/output), "
                                          "sharegpt (conversations), messages, or prompt/completion; map columns with "
                                          "--columns / data.columns")
                continue
            if format != "auto" and not _has_key_of(fmt, record):
                yield Problem(source, _main_key(fmt), f"missing (format is {fmt}; keys: "
                                                    f"{', '.join(sorted(map(_printable, record)))})")
                continue
            counts[fmt] = counts.get(fmt, 0) + 1
            try:
                yield formats.to_conversation(record, source, fmt, system)
            except RecordError as e:
                yield from e.problems


def _printable(key) -> str:
    # a key may hold a lone surrogate ("\\ud800" in JSON); printing it raw would crash the report
    return str(key).encode("utf-8", "backslashreplace").decode("utf-8")


def _main_key(fmt: str) -> str:
    return {"alpaca": "output", "sharegpt": "conversations", "messages": "messages",
            "prompt_completion": "completion"}[fmt]


def _has_key_of(fmt: str, record: dict) -> bool:
    # A forced format still needs the record to look like it; otherwise the errors would be misleading.
    return {"alpaca": ("instruction" in record or "output" in record), "sharegpt": "conversations" in record,
            "messages": "messages" in record, "prompt_completion": ("prompt" in record or "completion" in record)}[fmt]


def scan(paths: str | list[str], format: str = "auto", columns: dict[str, str] | None = None,
         system: str | None = None, keep_problems: int | None = None) -> ScanResult:
    """Read everything, keeping every conversation and the problems (the first `keep_problems`, all by default).

    Used by validate and inspect; memory stays bounded even for a file of millions of bad lines.
    """
    _check_format(format)
    result = ScanResult()
    files = resolve_paths(paths)
    result.files = [str(f) for f in files]
    last_bad = None
    for item in iter_conversations(files, format, columns, system, result.schemas):
        if isinstance(item, Problem):
            result.problem_count += 1
            if keep_problems is None or len(result.problems) < keep_problems:
                result.problems.append(item)
            # A record with several problems counts once; file-level problems (no line) are not records.
            if item.source != last_bad and _RECORD_SOURCE.search(item.source):
                result.bad_records += 1
                last_bad = item.source
        else:
            result.conversations.append(item)
    return result


def load_conversations(paths: str | list[str], format: str = "auto", columns: dict[str, str] | None = None,
                       system: str | None = None) -> list[Conversation]:
    """Load every record under `paths` (files, folders, globs) as Conversations, in input order.

    `format` is auto (detected per record) or one of alpaca, sharegpt, messages, prompt_completion;
    `columns` renames source keys (e.g. {"question": "instruction"}); `system` is added as the first
    message where a record has none. Raises LorakitError naming `file:line: field: problem` on the
    first unusable record (`lorakit data validate` lists all of them).
    """
    _check_format(format)
    out: list[Conversation] = []
    for item in iter_conversations(resolve_paths(paths), format, columns, system):
        if isinstance(item, Problem):
            raise LorakitError(f"{item} (run `lorakit data validate` to list every problem)")
        out.append(item)
    if not out:
        raise LorakitError(f"{paths}: no records found")
    return out
