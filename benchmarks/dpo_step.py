"""One DPO step of lorakit in process, timed by phase: what a change to the step's code is worth.

    .venv/bin/python benchmarks/dpo_step.py --threads 1 --reps 8
    # two source trees side by side, one core each (the same machine noise for both), then swap cores:
    taskset -c 0 .venv/bin/python benchmarks/dpo_step.py --src /tmp/before/src &
    taskset -c 1 .venv/bin/python benchmarks/dpo_step.py &
    wait

The step is benchmarks/dpo_speed.py's first optimizer step (its first 4 pairs, SmolLM2-135M-Instruct in
fp32, LoRA r 8 on the seven projections, one packed row) run --reps times on the same model, so nothing
but the step is timed: "forward" is the trained forward with its fused head and the reference forward
(adapter off, no grad), "backward" the backward. The first rep is a warm-up and not counted. Prints the
medians and the fastest step, in seconds, as one JSON line. The figure the issue asks for (tokens/s
against TRL) is dpo_speed.py's; this one only compares lorakit with itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=str(ROOT / "src"), help="the lorakit source tree to import")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=8)
    args = ap.parse_args()
    sys.path.insert(0, args.src)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch

    torch.set_num_threads(args.threads)
    from dpo_speed import TARGETS, make_pairs
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorakit.config import LoraConfig, RunConfig
    from lorakit.models import resolve_model
    from lorakit.models.lora import attach_lora
    from lorakit.training import fused
    from lorakit.training.attention import use_packed_attention
    from lorakit.training.loss import LossModule
    from lorakit.training.objectives import objective_for

    path = resolve_model("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = attach_lora(base, LoraConfig(r=8, alpha=16, target_modules=TARGETS))
    use_packed_attention(model)
    fused.fuse(model)
    model.train()

    def ids(messages, **kw) -> list[int]:
        out = tok.apply_chat_template(messages, tokenize=True, **kw)
        return list(out["input_ids"] if hasattr(out, "keys") else out)

    units = []
    for p in make_pairs(4):  # a completion's tokens: the whole conversation's past the prompt's
        prompt = ids(p["prompt"], add_generation_prompt=True)
        units.append(
            {"prompt": prompt, **{side: ids(p["prompt"] + p[side])[len(prompt) :] for side in ("chosen", "rejected")}}
        )
    objective = objective_for(RunConfig(train=dict(method="dpo", batch_size=4, dpo_beta=0.1)))
    micro = objective.micro_batches(units, 0, None, 1)
    pairs = objective.begin_step(micro)
    loss_of = LossModule(model)
    times = []
    for _ in range(args.reps + 1):
        model.zero_grad()
        t0 = time.perf_counter()
        total = sum(objective.loss(loss_of, mb).loss for mb in micro) / pairs
        t1 = time.perf_counter()
        total.backward()
        times.append((t1 - t0, time.perf_counter() - t1))
    times = times[1:]
    print(
        json.dumps(
            {
                "row_tokens": [int(mb["input_ids"].shape[1]) for mb in micro],
                "forward_s": round(statistics.median(f for f, _ in times), 3),
                "backward_s": round(statistics.median(b for _, b in times), 3),
                "step_s": round(statistics.median(f + b for f, b in times), 3),
                "fastest_step_s": round(min(f + b for f, b in times), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
