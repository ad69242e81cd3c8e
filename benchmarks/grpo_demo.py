"""The GRPO demo end to end: train configs/demo-grpo.yaml, then `lorakit eval` base against tuned.

    python benchmarks/grpo_demo.py --run /tmp/grpo-demo [--heldout 60] [--figure docs/grpo_demo_reward.png]
    python benchmarks/grpo_demo.py --run /tmp/grpo-demo --skip-train   # eval a finished run again

1. `lorakit train configs/demo-grpo.yaml` into RUN (skipped with --skip-train);
2. the run's plots again (plots/reward.png is the reward curve: the training reward per step and the
   greedy held-out reward the trainer measured), copied to --figure when given;
3. `lorakit eval RUN` on the first --heldout held-out prompts (all 100 by default): each model answers
   each prompt greedily once and samples num_generations (4) completions, scored by the run's rewards.

Prints one JSON line per stage (seconds, and the load average) and the table for docs/benchmarks.md.
Both commands run with one torch thread (OMP_NUM_THREADS=1; the config's train.threads is 1 too): on the
shared development machine, two threads per process contended with other jobs several times slower.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "demo-grpo.yaml"
# the held-out prompts the config names (data.eval_path, relative to the repository root)
HELDOUT = ROOT / yaml.safe_load(CONFIG.read_text(encoding="utf-8"))["data"]["eval_path"]


def stage(name: str, command: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=ROOT)
    seconds = round(time.perf_counter() - started, 1)
    print(json.dumps({"stage": name, "seconds": seconds, "load_average": os.getloadavg()[0]}), flush=True)
    return seconds


def table(result: dict) -> str:
    """Markdown rows: the base model against the GRPO-tuned one on the held-out prompts."""
    r = result["rewards"]
    n, k, base, tuned = r["prompts"], r["k"], r["base"], r["finetuned"]
    rows = ["| held-out, " + f"{n} prompts | base | GRPO-tuned |", "|---|---|---|"]

    def row(what, b, t):
        rows.append(f"| {what} | {b} | {t} |")

    row("accuracy, greedy (answer right)", _share(base["greedy"]["solved"], n), _share(tuned["greedy"]["solved"], n))
    row("mean reward, greedy", f"{base['greedy']['reward']:.3f}", f"{tuned['greedy']['reward']:.3f}")
    for name in base["greedy"]["per_function"]:
        b, t = base["greedy"]["per_function"][name], tuned["greedy"]["per_function"][name]
        row(f"{name}: share at full score, greedy", f"{b['at_full']:.2f}", f"{t['at_full']:.2f}")
    row(f"pass@{k}, sampled", _share(base["sampled"]["passed"], n), _share(tuned["sampled"]["passed"], n))
    row(f"mean reward, {k} samples per prompt", f"{base['sampled']['reward']:.3f}", f"{tuned['sampled']['reward']:.3f}")
    row(
        "retention, general questions",
        f"{result['retention']['base_right']}/{result['retention']['n']}",
        f"{result['retention']['finetuned_right']}/{result['retention']['n']}",
    )
    return "\n".join(rows)


def _share(count: int, n: int) -> str:
    return f"{count}/{n} ({100 * count / n:.0f}%)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="run directory (train.output_dir)")
    p.add_argument("--skip-train", action="store_true", help="evaluate a finished run in --run")
    p.add_argument("--heldout", type=int, default=100, help="held-out prompts for the eval (the first N)")
    p.add_argument("--figure", type=Path, help="copy the reward curve PNG here")
    args = p.parse_args()

    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    lorakit = [sys.executable, "-m", "lorakit"]
    if not args.skip_train:
        stage("train", [*lorakit, "train", str(CONFIG), f"train.output_dir={args.run}", "--overwrite"], env)

    from lorakit.training.tracking import write_plots

    curve = next(p for p in write_plots(args.run) if p.name == "reward.png")
    if args.figure:
        shutil.copyfile(curve, args.figure)
        print(json.dumps({"figure": str(args.figure), "bytes": args.figure.stat().st_size}))

    command = [*lorakit, "eval", str(args.run), "--max-new-tokens", "40", "--seed", "0"]
    lines = HELDOUT.read_text(encoding="utf-8").splitlines()
    if args.heldout < len(lines):
        subset = args.run / f"heldout-first-{args.heldout}.jsonl"
        subset.write_text("\n".join(lines[: args.heldout]) + "\n", encoding="utf-8")
        command += ["--data", str(subset)]
    stage("eval", command, env)
    result = json.loads((args.run / "eval.json").read_text(encoding="utf-8"))
    metrics = [json.loads(x) for x in (args.run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    steps = [m for m in metrics if "reward" in m]
    print(json.dumps({"train_reward_first": steps[0]["reward"], "train_reward_last": steps[-1]["reward"]}))
    print(table(result))


if __name__ == "__main__":
    main()
