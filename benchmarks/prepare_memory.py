"""Peak memory and time of `prepare_splits` on a synthetic JSONL of a given size: cold, then cache hit.

Each measurement runs in its own process; the figure is the process's peak RSS (ru_maxrss) minus its
peak after loading the tokenizer, so it counts what preparing the data costs. To compare with another
checkout, point --src at its src folder (e.g. the code before issue 18's streaming):

    .venv/bin/python benchmarks/prepare_memory.py --mb 20
    .venv/bin/python benchmarks/prepare_memory.py --mb 20 --src /path/to/old/checkout/src
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from lorakit import models
from lorakit.config import DataConfig
from lorakit.data import prepare_splits
from lorakit.data.prepared import tokenizer_fingerprint

data, cache = sys.argv[1], Path(sys.argv[2])
tok = models.load_tokenizer(models.resolve_model("qwen3-tiny-random"))
tokenizer_fingerprint(tok)  # its serialisation of the tokenizer is not data cost
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
out = prepare_splits(DataConfig(path=data, eval_split=0.05), tok, cache_dir=cache)
n = len(out.train)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": round(seconds, 1), "peak_mib": round(peak / 1024), "data_mib": round((peak - base) / 1024),
                  "train_samples": n, "tokens": out.stats["train_tokens"] + out.stats["eval_tokens"]}))
"""


def make_jsonl(path: Path, mb: float) -> int:
    """Alpaca records of varied length (English and Chinese) until the file reaches `mb` MiB."""
    words = ["lamp", "river", "palace", "autumn", "letter", "garden", "甄嬛", "皇上", "宫中", "月色"]
    target, size, i = int(mb * 1024 * 1024), 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while size < target:
            body = " ".join(words[(i * 7 + k) % len(words)] for k in range(20 + i % 180))
            line = (
                json.dumps(
                    {"instruction": f"question {i}: {body[:200]}", "input": "", "output": f"{i} {body}"},
                    ensure_ascii=False,
                )
                + "\n"
            )
            f.write(line)
            size += len(line.encode())
            i += 1
    return i


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=20, help="size of the synthetic JSONL in MiB")
    ap.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"), help="lorakit src to measure")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "big.jsonl"
        records = make_jsonl(data, args.mb)
        env = {**os.environ, "PYTHONPATH": args.src, "TOKENIZERS_PARALLELISM": "false"}
        for label in ("cold", "cache hit"):
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(data), str(Path(tmp) / "cache")],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps({"src": args.src, "mb": args.mb, "records": records, "run": label, **result}))


if __name__ == "__main__":
    main()
