"""`lorakit data validate`: check every record and report every problem as `file:line: field: what is wrong`."""

from __future__ import annotations

from lorakit.data.conversation import ScanResult
from lorakit.data.load import scan


def validate_data(
    paths: str | list[str], format: str = "auto", columns: dict[str, str] | None = None, max_errors: int = 20
) -> ScanResult:
    """Read all records under `paths`; the result keeps the first `max_errors` problems and counts the rest."""
    # Keep one more than shown, so the report can tell "exactly N" from "N and more" without storing them all.
    return scan(paths, format, columns, keep_problems=max(max_errors, 0) + 1)


def report_lines(result: ScanResult, max_errors: int = 20) -> list[str]:
    """The problems (at most `max_errors`, then `... and N more`) followed by a one-line summary."""
    shown = result.problems[: max(max_errors, 0)]
    lines = [str(p) for p in shown]
    if result.problem_count > len(shown):
        lines.append(f"... and {result.problem_count - len(shown)} more")
    lines.append(summary_line(result))
    return lines


def summary_line(result: ScanResult) -> str:
    """`N records in K files: G good, B with problems; schemas: alpaca 3, sharegpt 1`."""
    totals: dict[str, int] = {}
    for counts in result.schemas.values():
        for fmt, n in counts.items():
            totals[fmt] = totals.get(fmt, 0) + n
    schemas = ", ".join(f"{fmt} {n}" for fmt, n in sorted(totals.items())) or "none"
    mixed = [f for f, counts in result.schemas.items() if len(counts) > 1]
    files = len(result.files)
    text = (
        f"{result.records} records in {files} file{'s' if files != 1 else ''}: "
        f"{len(result.conversations)} good, {result.bad_records} with problems"
    )
    if result.problem_count:
        text += f" ({result.problem_count} problem{'s' if result.problem_count != 1 else ''})"
    text += f"; schemas: {schemas}"
    if mixed:
        text += f" (mixed within {', '.join(mixed)})"
    return text
