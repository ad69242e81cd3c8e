"""The data stage as three calls, for notebooks and for `lorakit data ...`: validate, inspect, prepare."""

from __future__ import annotations

from pathlib import Path

from lorakit.errors import LorakitError


def validate(paths: str | list[str], format: str = "auto", columns: dict[str, str] | None = None, max_errors: int = 20):
    """Read every record under `paths` and collect its problems (`file:line: field: what is wrong`).

    Returns a `ScanResult`: `.problems`, `.problem_count`, `.conversations`; `report_lines(result)` in
    `lorakit.data.problem_report` prints it as the CLI does.

    Example:
        >>> result = lorakit.data.validate("huanhuan.json")
        >>> result.problem_count, len(result.conversations)
        (0, 3729)
    """
    from lorakit.data.problem_report import validate_data

    if _is_preference_file(paths):
        return _validate_pairs(paths, columns or {}, max_errors)
    return validate_data(paths, format, columns or {}, max_errors)


def _validate_pairs(paths, columns: dict, max_errors: int):
    """validate for a preference file: every pair's problems (data/preference.py), schema "preference"."""
    from lorakit.data.conversation import Problem, ScanResult
    from lorakit.data.preference import iter_preferences
    from lorakit.data.readers import resolve_paths

    result = ScanResult(files=[str(f) for f in resolve_paths(paths)])
    last_bad = None
    for item in iter_preferences(paths, columns):
        if isinstance(item, Problem):
            result.problem_count += 1
            if len(result.problems) <= max_errors:
                result.problems.append(item)
            if item.source != last_bad:
                result.bad_records += 1
                last_bad = item.source
        else:
            result.conversations.append(item)  # the pairs, counted as the good records
            counts = result.schemas.setdefault(item.source.rsplit(":", 1)[0], {})
            counts["preference"] = counts.get("preference", 0) + 1
    return result


def inspect(
    paths: str | list[str],
    model: str,
    *,
    format: str = "auto",
    columns: dict[str, str] | None = None,
    system: str | None = None,
    thinking: str = "off",
    train_on: str = "all",
    max_length: int = 1024,
    preview: int = 2,
):
    """Token counts, length percentiles, truncation and duplicates of `paths` under `model`'s chat template.

    Returns an `Inspection`; `.summary()` gives the numbers as a dict, `.previews` the trained spans.

    Example:
        >>> lorakit.data.inspect("huanhuan.json", model="qwen3-tiny-random").summary()["length"]
        {'min': 21, 'mean': 40.2, 'p50': 35, ...}
    """
    from lorakit.data.stats import inspect_data

    if _is_preference_file(paths):  # pairs: lengths per side and the truncation rule (data/preference_tokens.py)
        from lorakit.data.preference_tokens import inspect_pairs

        return PairInspection(inspect_pairs(paths, _tokenizer(model), columns, system, thinking, max_length))
    result = inspect_data(
        paths,
        _tokenizer(model),
        format=format,
        columns=columns or {},
        system=system,
        thinking=thinking,
        train_on=train_on,
        max_length=max_length,
        preview=preview,
    )
    if not result.lengths:
        shown = paths if isinstance(paths, str) else ", ".join(map(str, paths))
        raise LorakitError(
            f"{shown}: no usable records ({result.bad_records} with problems); run `lorakit data validate`"
        )
    return result


def prepare(paths: str | list[str], model: str, *, cache_dir: str | Path | None = None, **fields):
    """Tokenize `paths` once into the content-hash cache that training reuses; returns `PreparedData`
    (`.train`, `.eval`: samples of input_ids and labels; `.stats`). `fields` are `data.*` config keys
    (format, system, max_length, eval_split, ...).

    Example:
        >>> data = lorakit.data.prepare("huanhuan.json", model="qwen3-tiny-random", eval_split=0.1)
        >>> len(data.train), len(data.eval)
    """
    from lorakit.data.prepared import data_config, default_cache_dir, prepare_splits

    cfg = data_config(path=paths, **fields)
    return prepare_splits(cfg, _tokenizer(model), cache_dir=Path(cache_dir) if cache_dir else default_cache_dir())


def _tokenizer(model: str):
    from lorakit.models import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model(model))


class PairInspection:
    """`inspect` of a preference file: `.summary()` as a dict, `.lines()` as the CLI prints it."""

    def __init__(self, summary: dict):
        self._summary = summary

    def summary(self) -> dict:
        return self._summary

    def lines(self) -> list[str]:
        from lorakit.data.preference_tokens import inspect_lines

        return inspect_lines(self._summary)


def _is_preference_file(paths) -> bool:
    """Whether the first record under `paths` is in a preference form (chosen/rejected or KTO's label)."""
    from lorakit.data.conversation import Problem
    from lorakit.data.preference import record_kind
    from lorakit.data.readers import iter_records, resolve_paths

    for path in resolve_paths(paths):
        for item in iter_records(path):
            return not isinstance(item, Problem) and record_kind(item[1]) is not None
    return False
