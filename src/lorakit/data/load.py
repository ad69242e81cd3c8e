"""Read data paths into conversations: `scan` collects every problem, `load_conversations` stops at the first."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from lorakit.data import formats
from lorakit.data.conversation import Conversation, Problem, RecordError, ScanResult
from lorakit.data.preference import refusal_for_sft
from lorakit.data.readers import iter_records, resolve_paths
from lorakit.errors import LorakitError

_RECORD_SOURCE = re.compile(r":#?\d+$")
# Progress bars appear once reading has taken this long (seconds): none for small files.
PROGRESS_DELAY = 2.0


def _check_format(format: str) -> None:
    if format != "auto" and format not in formats.FORMATS:
        raise LorakitError(f"data.format: unknown format {format!r} (expected auto, {', '.join(formats.FORMATS)})")


def iter_conversations(
    files: list[Path],
    format: str = "auto",
    columns: dict[str, str] | None = None,
    system: str | None = None,
    schemas: dict | None = None,
) -> Iterator[Conversation | Problem]:
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
            refusal = refusal_for_sft(record)  # pairs are read by data/preference.py, for train.method dpo
            if refusal:
                yield Problem(source, "", refusal)
                continue
            fmt = format if format != "auto" else formats.detect(record)
            if fmt is None:
                keys = ", ".join(sorted(map(_printable, record))[:8]) or "none"
                yield Problem(
                    source,
                    "",
                    f"unknown schema (keys: {keys}); expected alpaca (instruction/output), "
                    "sharegpt (conversations), messages, or prompt/completion; map columns with "
                    "--columns / data.columns",
                )
                continue
            if format != "auto" and not _has_key_of(fmt, record):
                yield Problem(
                    source,
                    _main_key(fmt),
                    f"missing (format is {fmt}; keys: {', '.join(sorted(map(_printable, record)))})",
                )
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
    return {"alpaca": "output", "sharegpt": "conversations", "messages": "messages", "prompt_completion": "completion"}[
        fmt
    ]


def _has_key_of(fmt: str, record: dict) -> bool:
    # A forced format still needs the record to look like it; otherwise the errors would be misleading.
    return {
        "alpaca": ("instruction" in record or "output" in record),
        "sharegpt": "conversations" in record,
        "messages": "messages" in record,
        "prompt_completion": ("prompt" in record or "completion" in record),
    }[fmt]


def scan(
    paths: str | list[str],
    format: str = "auto",
    columns: dict[str, str] | None = None,
    system: str | None = None,
    keep_problems: int | None = None,
) -> ScanResult:
    """Read everything, keeping every conversation and the problems (the first `keep_problems`, all by default).

    Used by validate; memory stays bounded even for a file of millions of bad lines.
    """
    result = ScanResult()
    result.conversations.extend(scan_iter(paths, result, format, columns, system, keep_problems))
    return result


def scan_iter(
    paths: str | list[str],
    result: ScanResult,
    format: str = "auto",
    columns: dict[str, str] | None = None,
    system: str | None = None,
    keep_problems: int | None = None,
) -> Iterator[Conversation]:
    """As scan, yielding the good conversations instead of keeping them (inspect streams a big file);
    `result` gets the files, schemas and problems, but not the conversations."""
    _check_format(format)
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
            yield item


def progress(paths: list[str], desc: str):
    """A tqdm bar over records (the total is known for JSONL: its line count), shown only once reading
    has taken PROGRESS_DELAY seconds, so small files print nothing."""
    from tqdm.auto import tqdm

    total: int | None = 0
    for f in (f for p in paths for f in resolve_paths(p)):
        if f.is_file() and f.suffix.lower() in (".jsonl", ".ndjson"):
            with open(f, "rb") as fh:
                total += sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
        else:
            total = None
            break
    return tqdm(
        total=total or None, desc=desc, unit=" records", delay=PROGRESS_DELAY, dynamic_ncols=True, mininterval=1.0
    )


def load_conversations(
    paths: str | list[str], format: str = "auto", columns: dict[str, str] | None = None, system: str | None = None
) -> list[Conversation]:
    """Load every record under `paths` (files, folders, globs) as Conversations, in input order.

    `format` is auto (detected per record) or one of alpaca, sharegpt, messages, prompt_completion;
    `columns` renames source keys (e.g. {"question": "instruction"}); `system` is added as the first
    message where a record has none. Raises LorakitError naming `file:line: field: problem` on the
    first unusable record (`lorakit data validate` lists all of them).
    """
    return list(iter_loaded_conversations(paths, format, columns, system))


def iter_loaded_conversations(
    paths: str | list[str], format: str = "auto", columns: dict[str, str] | None = None, system: str | None = None
) -> Iterator[Conversation]:
    """As load_conversations, one at a time: a big file is never held whole (prepare streams it)."""
    _check_format(format)
    empty = True
    for item in iter_conversations(resolve_paths(paths), format, columns, system):
        if isinstance(item, Problem):
            raise LorakitError(f"{item} (run `lorakit data validate` to list every problem)")
        empty = False
        yield item
    if empty:
        raise LorakitError(f"{paths}: no records found")
