"""DPO speed and memory: TRL's DPOTrainer against `lorakit.train` with train.method dpo, in one run.

    .venv/bin/python benchmarks/dpo_speed.py --methods trl,lorakit --pairs 8 --threads 1 --rounds 5
    .venv/bin/python benchmarks/dpo_speed.py --child lorakit --pairs 8 --profile   # where lorakit's time goes

Data: --pairs preference pairs built from the shipped demo persona (assets/demo/persona.json): prompt =
the question, chosen = the persona's answer, rejected = the answer to another question; both libraries
read the same records as conversational pairs (prompt / chosen / rejected message lists), render them
with the model's chat template and tokenize them the same way (lorakit follows TRL's rule).
Model: SmolLM2-135M-Instruct (lorakit's built-in `smollm2-135m-instruct`), fp32 weights and compute on
both sides, LoRA r 8 / alpha 16 on the seven projections, lr 5e-6, beta 0.1, sigmoid loss, 4 pairs per
optimizer step, one epoch, seed 42. Reference = the base with the adapter off on both sides.

Methods, each in its own subprocess (so peak memory is its own), one after the other, or with
--parallel all at once (on a machine others are using, so that every method sees the same load):
  trl       DPOTrainer, per_device_train_batch_size 4, gradient checkpointing off (faster on CPU),
            reference forward per step. padding_free is switched off by TRL 1.16 itself (it says the
            feature is "temporarily unavailable"), so batches are padded.
  trl_pre   as trl with precompute_ref_log_probs=True (one reference pass over the data first, 16 pairs
            per batch: without a backward, larger batches are faster).
  lorakit   lorakit.train(), batch_size 4 (TRL's batch): a step's 4 pairs in one forward, one packed
            row with attention kept within each sample and each pair's prompt stored and computed once
            for its two answers; reference per step under no_grad with the adapter off, same row.
            --lorakit-batch 1 runs one pair per forward x grad_accum 4 (the layout before the twelfth
            session's CPU cap counted a pair as two rows).
  lorakit_pre  as lorakit with train.precompute_ref_logps=true (its pass packs up to 2,048 tokens of
            pairs per forward).

Measured: tokens/s = the pairs' tokens (prompt counted for both completions, as TRL's attention mask
counts them) / wall time from the start of training (after model load and tokenization) to the end of
the last optimizer step, plus the reference precompute where there is one (both run it before training
starts, TRL in DPOTrainer's constructor, lorakit in the objective's begin_run: each is timed on its
own and added); peak memory = ru_maxrss of the child
(includes the model load). Also each method's first and last logged loss, and the child's minor page
faults and system CPU seconds (model load included): on a VM whose page faults are slow, they show how
much of a method's time went to the kernel handing it fresh memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("trl", "trl_pre", "lorakit", "lorakit_pre")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_pairs(n: int) -> list[dict]:
    rows = json.loads((ROOT / "src/lorakit/assets/demo/persona.json").read_text(encoding="utf-8"))
    out = []
    for i in range(n):
        a, b = rows[i % len(rows)], rows[(i * 7 + 3) % len(rows)]
        out.append(
            {
                "prompt": [{"role": "user", "content": a["instruction"]}],
                "chosen": [{"role": "assistant", "content": a["output"]}],
                "rejected": [{"role": "assistant", "content": b["output"]}],
            }
        )
    return out


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_trl(pairs: list[dict], args, precompute: bool) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from lorakit.models import resolve_model

    path = resolve_model("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    marks: dict = {"precompute": 0.0}
    original_precompute = DPOTrainer._precompute_ref_logps

    def timed_precompute(self, *a, **k):  # TRL 1.16 precomputes in DPOTrainer.__init__: timed and added
        t0 = time.perf_counter()
        try:
            return original_precompute(self, *a, **k)
        finally:
            marks["precompute"] += time.perf_counter() - t0

    DPOTrainer._precompute_ref_logps = timed_precompute

    class Timer(TrainerCallback):
        def on_train_begin(self, *a, **k):
            marks.setdefault("start", time.perf_counter())

        def on_step_end(self, *a, **k):
            marks["end"] = time.perf_counter()

    cfg = DPOConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        num_train_epochs=1,
        learning_rate=5e-6,
        beta=0.1,
        loss_type=["sigmoid"],
        max_length=1024,
        gradient_checkpointing=False,
        bf16=False,
        fp16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        seed=42,
        precompute_ref_log_probs=precompute,
        # the reference pass keeps nothing for a backward: larger batches there are faster, as for lorakit
        precompute_ref_batch_size=16 if precompute else None,
        dataloader_num_workers=0,
    )
    trainer = DPOTrainer(
        model,
        args=cfg,
        train_dataset=Dataset.from_list(pairs),
        processing_class=tok,
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, task_type="CAUSAL_LM"),
        callbacks=[Timer()],
    )
    tokens = sum(
        2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in trainer.train_dataset
    )
    marks["start"] = time.perf_counter()
    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return {
        "tokens": tokens,
        "seconds": marks["end"] - marks["start"] + marks["precompute"],
        "precompute_s": marks["precompute"],
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


def run_lorakit(pairs: list[dict], args, precompute: bool) -> dict:
    import lorakit

    tmp = Path(tempfile.mkdtemp())
    data = tmp / "pairs.jsonl"
    data.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    marks: dict = {"precompute": 0.0}
    from lorakit.training.objectives.dpo import DPO

    begin_run = DPO.begin_run

    def timed_begin_run(self, setup):  # the reference precompute runs before on_setup: timed and added
        t0 = time.perf_counter()
        try:
            return begin_run(self, setup)
        finally:
            marks["precompute"] += time.perf_counter() - t0

    DPO.begin_run = timed_begin_run

    def hook(setup):
        step = setup.optimizer.step

        def timed(*a, **k):
            out = step(*a, **k)
            marks["end"] = time.perf_counter()
            return out

        setup.optimizer.step = timed
        marks["tokens"] = sum(2 * len(u["prompt"]) + len(u["chosen"]) + len(u["rejected"]) for u in setup.data.train)
        marks["start"] = time.perf_counter()

    from lorakit.config import RunConfig
    from lorakit.training.loop import train as train_loop

    cfg = RunConfig(
        model={"name": "smollm2-135m-instruct", "dtype": "float32"},
        data={"path": str(data), "max_length": 1024, "dedup": False},
        lora={"r": 8, "alpha": 16, "target_modules": TARGETS},
        train={
            "method": "dpo",
            "output_dir": str(tmp / "run"),
            "epochs": 1,
            "batch_size": args.lorakit_batch,
            "grad_accum": 4 // args.lorakit_batch,
            "lr": 5e-6,
            "dpo_beta": 0.1,
            "precision": "fp32",
            "logging_steps": 1,
            "save_steps": 10_000,
            "seed": 42,
            "threads": args.threads,
            "precompute_ref_logps": precompute,
        },
    )
    run = train_loop(cfg, on_setup=hook)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    del lorakit
    return {
        "tokens": marks["tokens"],
        "seconds": marks["end"] - marks["start"] + marks["precompute"],
        "precompute_s": marks["precompute"],
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


def child(method: str, args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    pairs = make_pairs(args.pairs)
    run = run_trl if method.startswith("trl") else run_lorakit
    pre = method.endswith("_pre")
    if args.profile:  # where the time goes: cProfile's cumulative table of the child, on stdout
        import cProfile
        import pstats

        prof = cProfile.Profile()
        out = prof.runcall(run, pairs, args, pre)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
    else:
        out = run(pairs, args, pre)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # the whole child's (model load included): on a VM where a page fault is expensive, the side that
    # allocates and frees more fresh memory pays for it in system time; these show how much
    out.update(
        method=method,
        peak_mb=peak_mb(),
        tokens_per_s=out["tokens"] / out["seconds"],
        minor_faults=usage.ru_minflt,
        system_s=usage.ru_stime,
    )
    print("RESULT " + json.dumps(out), flush=True)


def median_run(rs: list[dict]) -> dict:
    """The run of median tokens/s (the upper middle one of an even count), its peak memory the largest seen."""
    mid = sorted(rs, key=lambda r: r["tokens_per_s"])[len(rs) // 2]
    return {**mid, "peak_mb": max(r["peak_mb"] for r in rs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lorakit-batch", type=int, default=4, choices=(1, 2, 4), help="lorakit's pairs per forward")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--child", choices=METHODS)
    ap.add_argument("--profile", action="store_true", help="with --child: print a cProfile table of that method")
    ap.add_argument("--parallel", action="store_true", help="run the methods at the same time (a shared machine)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds; medians are compared")
    args = ap.parse_args()
    if args.child:
        child(args.child, args)
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TOKENIZERS_PARALLELISM": "false"}
    methods = args.methods.split(",")
    cmds = {
        m: [
            sys.executable,
            __file__,
            "--child",
            m,
            "--pairs",
            str(args.pairs),
            "--threads",
            str(args.threads),
            "--lorakit-batch",
            str(args.lorakit_batch),
        ]
        for m in methods
    }
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for _ in range(args.rounds):  # interleaved rounds (a, b, a, b, ...): slow spells hit every method
        if args.parallel:  # all at once: on a shared machine every method then sees the same load
            procs = {
                m: subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                for m, c in cmds.items()
            }
            outputs = {m: p.communicate() for m, p in procs.items()}
        for method in methods:
            if args.parallel:
                stdout, stderr = outputs[method]
            else:
                proc = subprocess.run(cmds[method], capture_output=True, text=True, env=env)
                stdout, stderr = proc.stdout, proc.stderr
            line = next((x for x in stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{method} failed:\n{stderr[-3000:]}")
            r = json.loads(line[7:])
            runs[method].append(r)
            print(
                f"{method:12s} {r['tokens_per_s']:8.1f} tokens/s  {r['tokens']:6d} tokens  {r['seconds']:7.1f} s "
                f"(precompute {r['precompute_s']:5.1f} s)  "
                f"peak {r['peak_mb']:7.0f} MB  "
                f"faults {r['minor_faults'] / 1e6:4.2f}M sys {r['system_s']:5.1f} s  "
                f"loss {r['first_loss']:.4f} -> {r['last_loss']:.4f}",
                flush=True,
            )
    results = [median_run(rs) for rs in runs.values()]
    if args.rounds > 1:
        for r in results:
            print(f"median {r['method']:12s} {r['tokens_per_s']:8.1f} tokens/s  peak {r['peak_mb']:7.0f} MB")
    by = {r["method"]: r for r in results}
    trl = [by[m] for m in ("trl", "trl_pre") if m in by]
    ours = [by[m] for m in ("lorakit", "lorakit_pre") if m in by]
    if trl and ours:
        best_trl = max(trl, key=lambda r: r["tokens_per_s"])
        best = max(ours, key=lambda r: r["tokens_per_s"])
        print(
            f"lorakit best ({best['method']}) / TRL best ({best_trl['method']}): "
            f"{best['tokens_per_s'] / best_trl['tokens_per_s']:.2f}x tokens/s, "
            f"{best['peak_mb'] / best_trl['peak_mb']:.2f}x peak memory"
        )


if __name__ == "__main__":
    main()
