"""The tool-calling demo end to end: train configs/demo-tools.yaml, then `lorakit eval` base against tuned.

    python benchmarks/tools_demo.py --work /tmp/tools-demo [--threads 2] [--skip-train]

1. `lorakit train configs/demo-tools.yaml` into WORK/run (SmolLM2-135M-Instruct with the shipped
   tool-calling template, 128 conversations of src/lorakit/assets/tools/train.jsonl, one epoch);
2. `lorakit eval WORK/run --data HELD_OUT`: every assistant turn of the held-out conversations
   (src/lorakit/assets/tools/test.jsonl, questions never seen in training; `--heldout N` takes its first
   N of 60, written to WORK/heldout.jsonl), greedy, for the base model (adapter off, same template) and
   the fine-tune. 112 new tokens let the longest expected turn (two parallel calls, ~100 tokens) finish.

Prints one JSON line per stage (seconds) and the markdown table for README.md and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = ROOT / "src" / "lorakit" / "assets" / "tools" / "test.jsonl"


def stage(name: str, args: list[str], threads: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lorakit", *args], cwd=ROOT, env=env)
    if done.returncode:
        sys.exit(f"{name} failed (exit {done.returncode})")
    print(json.dumps({"stage": name, "seconds": round(time.perf_counter() - started, 1)}), flush=True)


def table(calls: dict) -> str:
    """Base against tuned: counts and rates of the eval's tool-call phase."""
    n, k = calls["call_turns"], calls["answer_turns"]
    b, t = calls["base"], calls["finetuned"]
    rows = ["| held-out turns | base | fine-tuned |", "|---|---:|---:|"]
    for label, key, of in (
        (f"function name right ({n} turns that call)", "name_right", n),
        (f"arguments exact and valid against the schema ({n})", "args_right", n),
        (f"a call where one is due ({n})", "called", n),
        (f"no call where none is due ({k} turns that answer in words)", "no_call_right", k),
    ):
        rows.append(f"| {label} | {b[key]}/{of} ({b[key] / of:.0%}) | {t[key]}/{of} ({t[key] / of:.0%}) |")
    rows.append(f"| malformed call text | {b['malformed']} | {t['malformed']} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, help="folder for the run (outside the repository)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=112, help="per answer in the eval")
    ap.add_argument("--heldout", type=int, default=60, help="evaluate the first N held-out conversations")
    ap.add_argument("--skip-train", action="store_true", help="reuse WORK/run as it is; only evaluate")
    ap.add_argument("overrides", nargs="*", help="config overrides for training, e.g. train.lr=5e-4")
    args = ap.parse_args()

    work = Path(args.work).resolve()
    run = work / "run"
    work.mkdir(parents=True, exist_ok=True)
    held = work / "heldout.jsonl"
    held.write_text("".join(HELD_OUT.read_text(encoding="utf-8").splitlines(keepends=True)[: args.heldout]))
    if not args.skip_train:
        config = ["configs/demo-tools.yaml", f"train.output_dir={run}", f"train.threads={args.threads}"]
        stage("train", ["train", *config, *args.overrides, "--overwrite"], args.threads)
    # the side-by-side answers (the eval's persona view) are not what this demo measures: 2 prompts
    evaluate = ["eval", str(run), "--data", str(held), "--max-new-tokens", str(args.max_new_tokens)]
    stage("eval", [*evaluate, "--max-prompts", "2"], args.threads)
    result = json.loads((run / "eval.json").read_text())
    calls = result["tool_calls"]
    (run.parent / "tools_demo_table.md").write_text(table(calls) + "\n")
    print(table(calls))
    print(json.dumps({"timing": result["timing"], "loss": result["loss"]}))


if __name__ == "__main__":
    main()
