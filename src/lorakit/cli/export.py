"""`lorakit export`: flags only; the work is lorakit.export (lorakit.exporting.export_model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def export_command(
    source: Annotated[
        str,
        typer.Argument(
            help="run directory, merged model folder, or model reference (built-in name or downloaded hub id)"
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="folder to write: the .gguf, a Modelfile, README.md")],
    format: Annotated[
        str,
        typer.Option("--format", help="gguf (the merged model) or gguf-lora (a run's adapter alone, for a base GGUF)"),
    ] = "gguf",
    quant: Annotated[
        str,
        typer.Option(
            "--quant",
            help="f16, bf16, q8_0, q6_k, q5_k_m or q4_k_m (K-quants by "
            "llama.cpp's own quantizer, from npm's @node-llama-cpp/"
            "linux-x64 3.22.1)",
        ),
    ] = "q8_0",
    base_gguf: Annotated[
        Path | None,
        typer.Option(
            "--base-gguf",
            help="gguf-lora: a GGUF of the base that lorakit "
            "exported, used by path (default: export the base into --out)",
        ),
    ] = None,
    quality_tokens: Annotated[
        int,
        typer.Option(
            "--quality-tokens", help="held-out answer tokens on which the quant is measured against float32 (0: skip)"
        ),
    ] = 256,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace a non-empty --out folder")] = False,
) -> None:
    """Export for llama.cpp / Ollama / LM Studio. Example: lorakit export runs/demo/run --out runs/demo/gguf"""
    from lorakit.api import export

    export(
        source, out, format=format, quant=quant, overwrite=overwrite, base_gguf=base_gguf, quality_tokens=quality_tokens
    )
