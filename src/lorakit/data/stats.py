"""`lorakit data inspect`: counts, token-length percentiles, truncation, duplicates, a histogram and a
coloured preview showing which tokens carry loss; for tool data, the tools and how often each is called."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lorakit.atomic import write_bytes
from lorakit.data.conversation import ScanResult
from lorakit.data.load import progress, scan_iter
from lorakit.data.template import IGNORE, encode_with_offsets, label_tokens, render_with_spans

PERCENTILES = (50, 90, 95, 99)


@dataclass
class ToolUse:
    """How the records use tools: per tool name, the records listing it and the calls made to it."""

    records: int = 0  # records with tools or tool calls
    listed: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    parallel_turns: int = 0  # assistant turns with more than one call
    results: int = 0  # tool turns

    def add(self, conv) -> None:
        if not conv.has_tools:
            return
        self.records += 1
        for t in conv.tools:
            name = t["function"]["name"]
            self.listed[name] = self.listed.get(name, 0) + 1
        for m in conv.messages:
            for c in m.tool_calls:
                self.calls[c.name] = self.calls.get(c.name, 0) + 1
            self.parallel_turns += len(m.tool_calls) > 1
            self.results += m.role == "tool"

    def summary(self) -> dict:
        names = list(self.listed) + [n for n in self.calls if n not in self.listed]
        return {
            "records": self.records,
            "calls": sum(self.calls.values()),
            "parallel_turns": self.parallel_turns,
            "results": self.results,
            "tools": {n: {"listed_in": self.listed.get(n, 0), "calls": self.calls.get(n, 0)} for n in names},
        }


@dataclass
class Inspection:
    """Everything `inspect` reports; `lengths` are untruncated token counts per good record."""

    records: int
    bad_records: int
    problem_count: int
    lengths: list[int]
    supervised: list[int]
    max_length: int
    duplicates: int
    files: list[str] = field(default_factory=list)
    previews: list[tuple[str, list[tuple[str, bool]]]] = field(default_factory=list)
    tool_use: ToolUse = field(default_factory=lambda: ToolUse())

    def summary(self) -> dict:
        """Plain numbers for printing or JSON."""
        lengths = np.array(self.lengths or [0])
        over = lengths[lengths > self.max_length] - self.max_length
        pct = {f"p{p}": int(np.percentile(lengths, p)) for p in PERCENTILES}
        return {
            "records": self.records,
            "good": len(self.lengths),
            "with_problems": self.bad_records,
            "problems": self.problem_count,
            "tokens": int(lengths.sum()) if self.lengths else 0,
            "supervised_tokens": int(sum(self.supervised)),
            "length": {
                "min": int(lengths.min()),
                "mean": round(float(lengths.mean()), 1),
                **pct,
                "max": int(lengths.max()),
            },
            "max_length": self.max_length,
            "truncated": int(over.size),
            "truncated_tokens": {"total": int(over.sum()), "max": int(over.max()) if over.size else 0},
            "duplicates": self.duplicates,
            **({"tool_use": self.tool_use.summary()} if self.tool_use.records else {}),
        }


def inspect_data(
    paths: str | list[str],
    tokenizer,
    *,
    format: str = "auto",
    columns: dict[str, str] | None = None,
    system: str | None = None,
    thinking: str = "off",
    train_on: str = "all",
    max_length: int = 1024,
    preview: int = 2,
) -> Inspection:
    """Tokenize every good record (without truncating, so the cut can be measured) and collect statistics."""
    result = ScanResult()
    lengths, supervised, previews, seen, tool_use = [], [], [], set(), ToolUse()
    with progress([paths] if isinstance(paths, str) else list(paths), "inspect") as bar:
        # one conversation at a time: only two numbers and a 32-byte digest stay per record
        for i, conv in enumerate(scan_iter(paths, result, format, columns, system, keep_problems=0)):
            bar.update(1)
            text, spans = render_with_spans(tokenizer, conv, thinking=thinking, train_on=train_on)
            ids, offsets = encode_with_offsets(tokenizer, text)
            labels = label_tokens(ids, offsets, spans)
            lengths.append(len(ids))
            supervised.append(sum(1 for lab in labels[:max_length] if lab != IGNORE))
            seen.add(hashlib.sha256(conv.key().encode("utf-8")).digest())
            tool_use.add(conv)
            if i < preview:
                previews.append((conv.source, _pieces(text, offsets, labels)))
    records = len(lengths) + result.bad_records
    return Inspection(
        records,
        result.bad_records,
        result.problem_count,
        lengths,
        supervised,
        max_length,
        len(lengths) - len(seen),
        result.files,
        previews,
        tool_use,
    )


def _pieces(text: str, offsets: list[tuple[int, int]], labels: list[int]) -> list[tuple[str, bool]]:
    """Split the text at token boundaries, each piece marked trained or not.

    Byte-level tokens can split one character (several tokens share its offsets); that character is
    shown once, with the first of its tokens.
    """
    pieces, end = [], 0
    for (s, e), label in zip(offsets, labels):
        s = max(s, end)
        if e > s:
            pieces.append((text[s:e], label != IGNORE))
            end = e
    return pieces


def plot_lengths(inspection: Inspection, path: str | Path) -> None:
    """Histogram of token lengths with the max_length cut marked; written as PNG atomically."""
    from lorakit.figures import Chart, png_bytes

    path = Path(path)
    fig = Chart(figsize=(7, 4))
    ax = fig.add_subplot()
    ax.hist(inspection.lengths or [0], bins=min(50, max(5, len(set(inspection.lengths)))), color="#4c72b0")
    ax.axvline(inspection.max_length, color="#c44e52", linestyle="--", label=f"max_length {inspection.max_length}")
    ax.set_xlabel("tokens per sample")
    ax.set_ylabel("samples")
    ax.set_title(f"{len(inspection.lengths)} samples")
    ax.legend()
    write_bytes(path, png_bytes(fig, dpi=100, bbox_inches="tight"))


def render_report(inspection: Inspection, console) -> None:
    """Print the summary table and the coloured previews (green = tokens that carry loss)."""
    from rich.table import Table
    from rich.text import Text

    s = inspection.summary()
    table = Table(title="data", show_header=False)
    table.add_row("records", f"{s['records']} ({s['good']} good, {s['with_problems']} with problems)")
    table.add_row("tokens", f"{s['tokens']} ({s['supervised_tokens']} with loss)")
    ln = s["length"]
    table.add_row(
        "length",
        f"min {ln['min']}, mean {ln['mean']}, "
        + ", ".join(f"p{p} {ln[f'p{p}']}" for p in PERCENTILES)
        + f", max {ln['max']}",
    )
    cut = s["truncated_tokens"]
    table.add_row(
        f"over max_length {s['max_length']}",
        f"{s['truncated']} samples would be cut ({cut['total']} tokens, at most {cut['max']} from one)",
    )
    table.add_row("duplicates", str(s["duplicates"]))
    if "tool_use" in s:
        tu = s["tool_use"]
        table.add_row(
            "tool use",
            f"{tu['records']} records: {tu['calls']} calls ({tu['parallel_turns']} turns with "
            f"parallel calls), {tu['results']} results",
        )
        for name, n in tu["tools"].items():
            table.add_row(f"  tool {name}", f"listed in {n['listed_in']} records, called {n['calls']} times")
    console.print(table)
    if s["with_problems"]:
        console.print(
            f"[yellow]{s['with_problems']} records have problems and were skipped; "
            "run `lorakit data validate` to list them[/yellow]"
        )
    for source, pieces in inspection.previews:
        console.print(
            Text(f"\n{source}  (green: trained tokens; alternating shades mark token boundaries)", style="bold")
        )
        text = Text()
        for j, (piece, trained) in enumerate(pieces):
            if trained:
                style = "black on green" if j % 2 else "black on bright_green"
            else:
                style = "grey50" if j % 2 else "grey70"
            text.append(piece, style=style)
        console.print(text)
