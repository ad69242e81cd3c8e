"""`lorakit eval`'s terminal output: the summary table of an eval and the table of lm-eval benchmarks,
from the data the library returned (what eval.json holds). Changes are coloured green when they went
the good way, red otherwise (lorakit.eval.summary.verdict, as in report.html)."""

from __future__ import annotations

from pathlib import Path

from lorakit.eval.summary import short, summary_rows, value_text, verdict

COLOURS = {"better": "green", "worse": "red"}


def print_summary(result: dict, report: Path) -> None:
    """The headline numbers, base against fine-tuned, then the notes a reader needs to trust them."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"lorakit eval: {result['run_dir']}", title_justify="left")
    for col, just in (("measure", "left"), ("base", "right"), ("fine-tuned", "right"), ("change", "right")):
        table.add_column(col, justify=just)
    for label, base, tuned, lower in summary_rows(result):
        change = ""
        if base is not None and tuned is not None:
            delta = tuned - base
            change = _coloured(f"{delta:+.4g}", verdict(delta, lower))
        table.add_row(label, short(base), short(tuned), change)
    console = Console()  # notes below are soft-wrapped: a narrow terminal must not split them mid-phrase
    console.print(table)
    for section in ("loss", "persona", "tool_calls"):
        if (result.get(section) or {}).get("skipped"):
            console.print(f"{section}: {result[section]['skipped']}", markup=False, soft_wrap=True)
    if result.get("persona", {}).get("rule"):
        console.print(f"persona rule: {result['persona']['rule']}", markup=False, soft_wrap=True)
    settings = result.get("settings") or {}
    if (result.get("retention") or {}).get("rule"):
        console.print(
            f"retention rule ({settings.get('retention_set')}, language {settings.get('language')}, "
            f"{settings.get('language_source')}): {result['retention']['rule']}",
            markup=False,
            soft_wrap=True,
        )
    if (result.get("retention") or {}).get("advice"):
        console.print(result["retention"]["advice"], markup=False, style="yellow", soft_wrap=True)
    if result.get("judge") and result["judge"].get("error"):
        console.print(f"judge: {result['judge']['error']}", markup=False, style="red", soft_wrap=True)
    console.print(f"report: {report}", markup=False, soft_wrap=True)


def print_benchmarks(section: dict, report: Path) -> None:
    """The benchmarks table: value ± stderr per side and the change, then the prompt settings."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="lm-eval benchmarks: base vs fine-tuned", title_justify="left")
    for col, just in (
        ("task", "left"),
        ("metric", "left"),
        ("n", "right"),
        ("base", "right"),
        ("fine-tuned", "right"),
        ("change", "right"),
    ):
        table.add_column(col, justify=just)
    for row in section["results"]:
        change = row["change"]
        text = "–" if change is None else _coloured(f"{change:+.4f}", verdict(change, row["lower_is_better"]))
        table.add_row(
            row["task"], row["metric"], str(row["n"] or ""), value_text(row["base"]), value_text(row["finetuned"]), text
        )
    console = Console()
    console.print(table)
    s = section["settings"]
    console.print(
        f"prompts: {s['chat_template']}, thinking {s['thinking']}; few-shot: "
        f"{'task default' if s['num_fewshot'] is None else s['num_fewshot']}; "
        f"limit: {s['limit'] if s['limit'] is not None else 'none'}",
        markup=False,
    )
    console.print(f"report: {report}", markup=False)


def _coloured(text: str, how: str) -> str:
    """`text` in rich markup, green or red by the verdict; plain when nothing changed."""
    return f"[{COLOURS[how]}]{text}[/]" if how else text
