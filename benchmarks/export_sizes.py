"""Export time and file size per quant type (docs/benchmarks.md, "Export to GGUF").

    PYTHONPATH=src python benchmarks/export_sizes.py --model smollm2-135m-instruct

Each quant is exported from the same model reference into a temporary folder through lorakit's API;
the time is the whole `export_model` call (tokenizer, conversion, Modelfile check, card, atomic write).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from lorakit.exporting import export_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--quants", default="f16,bf16,q8_0")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for quant in args.quants.split(","):
            started = time.perf_counter()
            out = export_model(args.model, Path(tmp) / quant, quant=quant)
            seconds = time.perf_counter() - started
            size = sum(f.stat().st_size for f in out.glob("*.gguf"))
            rows.append((quant, seconds, size))
    print(f"\n| {args.model} | export time (s) | GGUF size (MB) |\n|---|---|---|")
    for quant, seconds, size in rows:
        print(f"| {quant} | {seconds:.1f} | {size / 1e6:.1f} |")


if __name__ == "__main__":
    main()
