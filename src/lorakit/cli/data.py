"""`lorakit data validate|inspect|prepare`: thin commands over data/stage.py (validate, inspect, prepare)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from lorakit.errors import LorakitError

app = typer.Typer(
    help="Check, inspect and tokenize training data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# One Annotated type per option the three commands share (typer's own style, as every lorakit command).
Data = Annotated[
    List[str], typer.Argument(help="data files, folders or globs (JSON, JSONL, CSV, Parquet, datasets folders)")
]
Format = Annotated[
    str, typer.Option("--format", help="record schema: auto, alpaca, sharegpt, messages, prompt_completion")
]
Columns = Annotated[
    Optional[str], typer.Option("--columns", help="rename source columns, e.g. question=instruction,answer=output")
]
Model = Annotated[
    str, typer.Option("--model", "-m", help="model whose tokenizer and chat template to use (name or folder)")
]
System = Annotated[Optional[str], typer.Option("--system", help="system prompt added where a record has none")]
Thinking = Annotated[str, typer.Option("--thinking", help="off, on, or auto (per sample: on when it has reasoning)")]
TrainOn = Annotated[str, typer.Option("--train-on", help="assistant turns that carry loss: all or last")]
MaxLength = Annotated[int, typer.Option("--max-length", help="tokens per sample; longer samples are truncated")]


def _columns(text: Optional[str]) -> dict[str, str]:
    out = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise LorakitError(f"--columns {item!r}: expected source=target, e.g. question=instruction")
        src, dst = item.split("=", 1)
        out[src.strip()] = dst.strip()
    return out


def _weights(text: Optional[str]) -> list[float]:
    try:
        return [float(w) for w in text.split(",")] if text else []
    except ValueError:
        raise LorakitError(f"--weights {text!r}: expected numbers separated by commas, e.g. 3,1") from None


@app.command()
def validate(
    data: Data,
    format: Format = "auto",
    columns: Columns = None,
    max_errors: Annotated[int, typer.Option("--max-errors", help="problems to print before '... and N more'")] = 20,
) -> None:
    """Check every record; print each problem as file:line: field: what is wrong. Exit 1 if any."""
    from lorakit.data import stage
    from lorakit.data.problem_report import report_lines

    result = stage.validate(data, format, _columns(columns), max_errors)
    for line in report_lines(result, max_errors):
        typer.echo(line)
    if result.problem_count or not result.conversations:
        # SystemExit, not typer.Exit: under standalone_mode=False click returns typer.Exit's code instead of exiting.
        raise SystemExit(1)


@app.command()
def inspect(
    data: Data,
    model: Model,
    format: Format = "auto",
    columns: Columns = None,
    system: System = None,
    thinking: Thinking = "off",
    train_on: TrainOn = "all",
    max_length: MaxLength = 1024,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="write a token-length histogram PNG here")] = None,
    preview: Annotated[int, typer.Option("--preview", help="samples to show with their trained tokens coloured")] = 2,
    json_out: Annotated[bool, typer.Option("--json", help="print the statistics as JSON instead")] = False,
) -> None:
    """Token counts, length percentiles, truncation, duplicates and a coloured preview of the loss mask."""
    import json

    from rich.console import Console

    from lorakit.data import stage
    from lorakit.data.stats import plot_lengths, render_report

    result = stage.inspect(
        data,
        model,
        format=format,
        columns=_columns(columns),
        system=system,
        thinking=thinking,
        train_on=train_on,
        max_length=max_length,
        preview=0 if json_out else preview,
    )
    if isinstance(result, stage.PairInspection):  # a preference file
        typer.echo(json.dumps(result.summary(), indent=2) if json_out else "\n".join(result.lines()))
        return
    if plot is not None:
        plot_lengths(result, plot)
    if json_out:
        typer.echo(json.dumps(result.summary(), indent=2))
    else:
        render_report(result, Console())
        if plot is not None:
            typer.echo(f"histogram: {plot}")


@app.command()
def prepare(
    data: Data,
    model: Model,
    format: Format = "auto",
    columns: Columns = None,
    system: System = None,
    thinking: Thinking = "off",
    train_on: TrainOn = "all",
    max_length: MaxLength = 1024,
    eval_split: Annotated[float, typer.Option("--eval-split", help="held-out share (<1) or count (>=1)")] = 0.0,
    eval_path: Annotated[Optional[str], typer.Option("--eval-path", help="separate held-out data")] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", help="mixing weight per DATA path, e.g. 3,1")] = None,
    dedup: Annotated[bool, typer.Option("--dedup/--no-dedup", help="drop exact duplicate conversations")] = True,
    max_samples: Annotated[
        Optional[int], typer.Option("--max-samples", help="use at most this many training records")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="seed for splitting and mixing")] = 42,
    out: Annotated[Optional[Path], typer.Option("--out", help="cache folder (default: the one `train` reads)")] = None,
    export_jsonl: Annotated[
        Optional[Path],
        typer.Option("--export-jsonl", help="also write the training samples as JSONL (input_ids, labels)"),
    ] = None,
) -> None:
    """Tokenize once into the content-hash cache that training reuses; optionally export JSONL."""
    from lorakit.data import stage
    from lorakit.data.prepared import export_jsonl as export
    from lorakit.data.prepared import summary_lines

    prepared = stage.prepare(
        data if len(data) > 1 else data[0],
        model,
        cache_dir=out,
        format=format,
        columns=_columns(columns),
        system=system,
        thinking=thinking,
        train_on=train_on,
        max_length=max_length,
        eval_split=eval_split,
        eval_path=eval_path,
        dedup=dedup,
        max_samples=max_samples,
        seed=seed,
        weights=_weights(weights),
    )
    for line in summary_lines(prepared):
        typer.echo(line)
    if export_jsonl is not None:
        export(prepared.train, export_jsonl)
        typer.echo(f"exported: {export_jsonl}")
