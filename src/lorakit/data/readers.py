"""Find data files and read raw records from them: JSON, JSONL, CSV, Parquet and `datasets` folders.

Readers never raise on bad content: they yield `(source, record)` pairs and `Problem`s, so `validate`
can report every problem and `load_conversations` can stop at the first one.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from pathlib import Path
from typing import Iterator, Union

from lorakit.data.conversation import Problem
from lorakit.errors import LorakitError

EXTENSIONS = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".arrow": "arrow",
}
# A JSONL line longer than this is reported, not read: one 2 GB line must not take 2 GB of memory.
MAX_LINE_BYTES = 64 * 1024 * 1024
# A JSON array is parsed in memory; beyond this size we ask for JSONL instead.
MAX_JSON_BYTES = 1024 * 1024 * 1024
_SPLIT_WORDS = ("test", "validation", "valid", "dev", "eval")

Item = Union[tuple[str, dict], Problem]


def resolve_paths(paths: str | list[str]) -> list[Path]:
    """Expand files, folders (recursively) and globs into data files and `datasets` folders, in sorted order."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items or all(str(p).strip() == "" for p in items):
        raise LorakitError("data: no data path given (set data.path or pass DATA)")
    out: list[Path] = []
    for item in items:
        item = os.path.expanduser(str(item))
        p = Path(item)
        if p.is_dir():
            out += _expand_dir(p)
        elif p.is_file():
            out.append(p)
        elif glob.has_magic(item):
            hits = sorted(Path(h) for h in glob.glob(item, recursive=True))
            files = [h for h in hits if h.is_file() and h.suffix.lower() in EXTENSIONS]
            dirs = [h for h in hits if h.is_dir()]
            for d in dirs:
                files += _expand_dir(d)
            if not files:
                raise LorakitError(f"{item}: the pattern matches no data files ({', '.join(sorted(EXTENSIONS))})")
            out += files
        else:
            raise LorakitError(f"{item}: no such file or folder")
    return out


def is_hf_folder(p: Path) -> bool:
    """A folder written by `datasets.Dataset.save_to_disk` (or DatasetDict.save_to_disk)."""
    return (p / "dataset_dict.json").is_file() or ((p / "state.json").is_file() and (p / "dataset_info.json").is_file())


def _expand_dir(d: Path) -> list[Path]:
    if is_hf_folder(d):
        return [d]
    files = sorted(
        f
        for f in d.rglob("*")
        if f.is_file()
        and f.suffix.lower() in EXTENSIONS
        and not any(part.startswith(".") for part in f.relative_to(d).parts)
    )
    if not files:
        raise LorakitError(f"{d}: the folder holds no data files ({', '.join(sorted(EXTENSIONS))})")
    # A Hub-style folder keeps splits side by side (train-*.parquet, test-*.parquet); train on the train split only.
    train = [f for f in files if _split_of(f.relative_to(d)) == "train"]
    held_out = [f for f in files if _split_of(f.relative_to(d)) == "other"]
    return train if train and held_out else files


def _split_of(rel: Path) -> str:
    for part in rel.parts:
        low = part.lower()
        if low.startswith("train"):
            return "train"
        if any(low.startswith(w) for w in _SPLIT_WORDS):
            return "other"
    return "none"


def iter_records(path: Path) -> Iterator[Item]:
    """Yield `(source, record)` or `Problem` for every record in one file or `datasets` folder."""
    if path.is_dir():
        yield from _read_hf_folder(path)
        return
    kind = EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        yield Problem(str(path), "", f"unsupported file type {path.suffix!r} (use {', '.join(sorted(EXTENSIONS))})")
        return
    try:
        size = path.stat().st_size
    except OSError as e:
        yield Problem(str(path), "", f"cannot read: {e.strerror}")
        return
    if size == 0:
        yield Problem(str(path), "", "empty file")
        return
    reader = {
        "json": _read_json,
        "jsonl": _read_jsonl,
        "csv": _read_csv,
        "parquet": _read_parquet,
        "arrow": _read_arrow,
    }[kind]
    try:
        yield from reader(path)
    except OSError as e:
        yield Problem(str(path), "", f"cannot read: {e.strerror or e}")


def _decode(raw: bytes, source_file: str, first_line: int = 1) -> str | Problem:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = first_line + raw.count(b"\n", 0, e.start)
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        hint = "; the file looks like UTF-16, save it as UTF-8" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        return Problem(f"{source_file}:{line}", "", f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {col}){hint}")


def _read_jsonl(path: Path) -> Iterator[Item]:
    with open(path, "rb") as f:
        lineno = 0
        while True:
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                break
            lineno += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                _skip_rest_of_line(f)
                yield Problem(f"{path}:{lineno}", "", f"line longer than {MAX_LINE_BYTES} bytes; not read")
                continue
            if lineno > 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a BOM only belongs at the start of the file, but is harmless elsewhere
            text = _decode(raw, str(path), lineno)
            if isinstance(text, Problem):
                yield text
                continue
            if not text.strip():
                continue
            yield _parse_record(text.rstrip("\r\n"), f"{path}:{lineno}")
        if lineno == 0:
            yield Problem(str(path), "", "empty file")


def _skip_rest_of_line(f) -> None:
    while True:
        chunk = f.readline(1024 * 1024)
        if not chunk or chunk.endswith(b"\n"):
            return


def _parse_record(text: str, source: str) -> Item:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        hint = " (record cut short?)" if e.pos >= len(text.rstrip()) else ""
        return Problem(source, "", f"invalid JSON: {e.msg} at column {e.colno}{hint}")
    except RecursionError:
        return Problem(source, "", "invalid JSON: nested too deeply")
    if not isinstance(obj, dict):
        return Problem(source, "", f"expected a JSON object per record, found {_json_type(obj)}")
    return source, obj


def _json_type(obj) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(obj), "a number"
    )


def _read_json(path: Path) -> Iterator[Item]:
    if path.stat().st_size > MAX_JSON_BYTES:
        yield Problem(
            str(path),
            "",
            f"JSON file larger than {MAX_JSON_BYTES >> 20} MiB; convert it to JSONL "
            "(one record per line), which is read as a stream",
        )
        return
    text = _decode(path.read_bytes(), str(path))
    if isinstance(text, Problem):
        yield text
        return
    stripped = text.lstrip()
    if not stripped:
        yield Problem(str(path), "", "empty file")
        return
    if stripped[0] == "{":
        yield from _json_objects(text, path)
    elif stripped[0] == "[":
        yield from _json_array(text, path)
    else:
        line = 1 + text.count("\n", 0, len(text) - len(stripped))
        yield Problem(f"{path}:{line}", "", "invalid JSON: expected an array of records ('[')")


def _json_objects(text: str, path: Path) -> Iterator[Item]:
    """A .json file holding one object, or one object per line (JSONL under a .json name)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                yield _parse_record(line, f"{path}:{i}")
        return
    for key in ("data", "train", "records", "examples"):
        if isinstance(obj.get(key), list):  # {"data": [...]}: the records live under one key
            yield from _with_file_tools(_json_array(text, path, inner=obj[key]), obj.get("tools"))
            return
    yield f"{path}:1", obj


def _with_file_tools(items: Iterator[Item], tools) -> Iterator[Item]:
    """`{"tools": [...], "data": [...]}`: the file's tools belong to every record that lists none of its own."""
    for item in items:
        if tools is not None and not isinstance(item, Problem) and "tools" not in item[1]:
            item = item[0], {**item[1], "tools": tools}
        yield item


def _json_array(text: str, path: Path, inner: list | None = None) -> Iterator[Item]:
    """Decode array elements one by one so every record keeps its line number."""
    if inner is not None:
        for i, obj in enumerate(inner):
            if isinstance(obj, dict):
                yield f"{path}:#{i + 1}", obj
            else:
                yield Problem(f"{path}:#{i + 1}", "", f"expected a JSON object per record, found {_json_type(obj)}")
        return
    dec = json.JSONDecoder()
    pos, line, counted = text.index("[") + 1, 1, 0
    n = 0
    while True:
        pos = _skip_ws(text, pos)
        if pos >= len(text):
            yield Problem(f"{path}:{_line(text, pos)}", "", "invalid JSON: file ends inside the array (truncated?)")
            return
        if text[pos] == "]" and n == 0:
            break
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            obj, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            yield Problem(f"{path}:{e.lineno}", "", f"invalid JSON: {e.msg} at column {e.colno}; rest of file not read")
            return
        except RecursionError:
            yield Problem(f"{path}:{line}", "", "invalid JSON: nested too deeply; rest of file not read")
            return
        n += 1
        if isinstance(obj, dict):
            yield f"{path}:{line}", obj
        else:
            yield Problem(f"{path}:{line}", "", f"expected a JSON object per record, found {_json_type(obj)}")
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos += 1
            continue
        if pos < len(text) and text[pos] == "]":
            break
        what = "file ends inside the array (truncated?)" if pos >= len(text) else "expected ',' or ']'"
        yield Problem(f"{path}:{_line(text, pos)}", "", f"invalid JSON: {what}; rest of file not read")
        return
    if n == 0:
        yield Problem(str(path), "", "empty array: no records")
    elif text[pos + 1 :].strip():
        yield Problem(
            f"{path}:{_line(text, pos + 1 + len(text[pos + 1 :]) - len(text[pos + 1 :].lstrip()))}",
            "",
            "invalid JSON: extra data after the array",
        )


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _line(text: str, pos: int) -> int:
    return 1 + text.count("\n", 0, pos)


def _read_csv(path: Path) -> Iterator[Item]:
    text = _decode(path.read_bytes(), str(path))
    if isinstance(text, Problem):
        yield text
        return
    csv.field_size_limit(MAX_LINE_BYTES)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)  # strict: an unclosed quote is an error
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            yield Problem(str(path), "", "empty file (no header row)")
            return
        header = [h.strip() for h in header]
        start = reader.line_num + 1
        n = 0
        for row in reader:
            source = f"{path}:{start}"
            start = reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            n += 1
            if len(row) != len(header):
                yield Problem(source, "", f"expected {len(header)} columns, found {len(row)}")
                continue
            # Empty cells mean "no value", as a missing key would in JSON.
            yield source, {k: v for k, v in zip(header, row) if v != ""}
    except csv.Error as e:
        yield Problem(f"{path}:{reader.line_num}", "", f"invalid CSV: {e}; rest of file not read")
        return
    if n == 0:
        yield Problem(str(path), "", "no records (header only)")


def _read_parquet(path: Path) -> Iterator[Item]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        batches = pf.iter_batches(batch_size=1024)
        row = 0
        for batch in batches:
            for rec in batch.to_pylist():
                row += 1
                yield f"{path}:{row}", _drop_nulls(rec)
    except Exception as e:  # pyarrow raises many types for corrupt files; all mean the same to a user
        yield Problem(str(path), "", f"cannot read Parquet: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        return
    if row == 0:
        yield Problem(str(path), "", "no records")


def _read_arrow(path: Path) -> Iterator[Item]:
    try:
        from datasets import Dataset

        ds = Dataset.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - arrow/datasets raise many types for unreadable files
        yield Problem(str(path), "", f"cannot read Arrow file: {str(e).splitlines()[0] if str(e) else e!r}")
        return
    yield from _rows(ds, str(path))


def _read_hf_folder(path: Path) -> Iterator[Item]:
    try:
        from datasets import DatasetDict, load_from_disk

        ds = load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001
        yield Problem(str(path), "", f"cannot load datasets folder: {str(e).splitlines()[0] if str(e) else e!r}")
        return
    if isinstance(ds, DatasetDict):
        split = "train" if "train" in ds else (next(iter(ds)) if len(ds) == 1 else None)
        if split is None:
            yield Problem(
                str(path), "", f"datasets folder has splits {sorted(ds)} but no 'train'; pass one split's folder"
            )
            return
        ds = ds[split]
    yield from _rows(ds, str(path))


def _rows(ds, name: str) -> Iterator[Item]:
    if len(ds) == 0:
        yield Problem(name, "", "no records")
        return
    for i, rec in enumerate(ds):
        yield f"{name}:{i + 1}", _drop_nulls(rec)


def _drop_nulls(rec: dict) -> dict:
    """Tables pad absent values with null; treat them as missing keys, as in JSON.

    Nested too: Arrow gives every struct in a column the union of all their keys, so a `lookup` call's
    arguments would come back as {"element": "iron", "expression": null, ...} and a tool schema with
    every other tool's properties as nulls. (An argument that really is null is lost with them; tables
    that keep arguments and tools as JSON text, as most do, keep it.)
    """
    return {k: _without_nulls(v) for k, v in rec.items() if v is not None}


def _without_nulls(value):
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value
