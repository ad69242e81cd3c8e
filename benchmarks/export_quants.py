"""Size, time and quality of each GGUF quant of a model or run, against its float32 weights.

    .venv/bin/python benchmarks/export_quants.py SOURCE [--quant f16 q8_0 q6_k q5_k_m q4_k_m] [--tokens 512]

SOURCE is a run directory (merged once in float32; held-out text: the run's own held-out split) or a model
reference (held-out text: lorakit's built-in demo held-out set). For each quant it times `lorakit.export`
from the float32 folder (quality measurement off), then scores the same held-out answer tokens three ways:
- top-1 agreement and loss change of the stored weights (lorakit.exporting.quality: what `lorakit export`
  prints; weights dequantized by gguf-py, computed in float32 by transformers);
- top-1 agreement inside llama.cpp itself (node-llama-cpp's libllama, tests/unit/export/llama_cpp/
  score_gguf.mjs), whose kernels also round the activations.
Prints one markdown row per quant (the table in docs/export.md).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import tempfile
import time
from pathlib import Path

import torch

SCORER = Path(__file__).resolve().parents[1] / "tests" / "unit" / "export" / "llama_cpp"


def llama_cpp_top1(gguf_file: Path, samples) -> list[int]:
    top1 = []
    for ids, scored in samples:
        request = json.dumps({"model": str(gguf_file), "tokens": ids, "positions": scored})
        proc = subprocess.run(["node", "score_gguf.mjs"], input=request, capture_output=True, text=True, cwd=SCORER,
                              timeout=600)  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        top1 += json.loads(proc.stdout)["top1"]
    return top1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source")
    ap.add_argument("--quant", nargs="+", default=["f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m"])
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    import lorakit
    from lorakit.exporting.quality import measure, reference
    from lorakit.models import resolve_model
    from lorakit.rundir import open_run

    hf_logging.disable_progress_bar()
    source = Path(args.source)
    with tempfile.TemporaryDirectory() as tmp:
        run = None
        if source.is_dir() and not (source / "config.json").is_file():
            run = open_run(source)
            with contextlib.redirect_stdout(io.StringIO()):
                model_dir = lorakit.merge(source, Path(tmp) / "merged", dtype="float32")
        else:
            model_dir = resolve_model(args.source)
        started = time.perf_counter()
        ref = reference(model_dir, run, args.tokens)
        print(
            f"float32 reference: {len(ref.targets)} held-out answer tokens from {ref.source}, "
            f"loss {sum(ref.nll) / len(ref.nll):.4f} ({time.perf_counter() - started:.1f} s)"
        )
        print(
            "| quant | size (MB) | export (s) | top-1 agreement, weights | loss change | perplexity | "
            "top-1 agreement in llama.cpp | measure (s) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for quant in args.quant:
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                out = lorakit.export(model_dir, Path(tmp) / f"gguf-{quant}", quant=quant, quality_tokens=0)
            took = time.perf_counter() - started
            path = next(out.glob("*.gguf"))
            started = time.perf_counter()
            q = measure(path, model_dir, ref, quant)
            measured = time.perf_counter() - started
            got = llama_cpp_top1(path, ref.samples)
            in_llama = sum(a == b for a, b in zip(got, ref.top1)) / len(ref.top1)
            print(f"| {quant} | {path.stat().st_size / 1e6:.1f} | {took:.1f} | {q.agreement:.1%} | "
                  f"{q.loss_change:+.4f} | {q.as_dict()['perplexity_fp32']:.2f} -> {q.as_dict()['perplexity']:.2f} | "
                  f"{in_llama:.1%} | {measured:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
