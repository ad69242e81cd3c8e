"""`lorakit export`: flags only; the work is lorakit.export (lorakit.exporting.export_model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def export_command(
    source: Annotated[str, typer.Argument(help="run directory, merged model folder, or model reference "
                                               "(built-in name or downloaded hub id)")],
    out: Annotated[Path, typer.Option("--out", help="folder to write: the .gguf, a Modelfile, README.md")],
    format: Annotated[str, typer.Option("--format", help="output format (gguf)")] = "gguf",
    quant: Annotated[str, typer.Option("--quant", help="f16, bf16, q8_0 or q4_k_m (q4_k_m needs llama.cpp's "
                                                       "llama-quantize)")] = "q8_0",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace a non-empty --out folder")] = False,
) -> None:
    """Export for llama.cpp / Ollama / LM Studio. Example: lorakit export runs/demo/run --out runs/demo/gguf"""
    from lorakit.api import export

    export(source, out, format=format, quant=quant, overwrite=overwrite)
