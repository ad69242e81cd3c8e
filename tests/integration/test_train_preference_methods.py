"""ORPO, SimPO and KTO through the public API (`lorakit.train`, what the CLI calls) on qwen3-tiny-random:
the one loop runs them to the end with eval steps, logs each method's metrics and writes the adapter;
a step of 2 x 2 (batch x accumulation) equals 4 x 1 for ORPO (two step-level denominators); KTO's mismatched
KL pairs need the data's two kinds of answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lorakit_cli import write_config
from safetensors.torch import load_file

PAIRS = [
    {
        "prompt": f"Question {i}: who keeps the light?",
        "chosen": f"I do, love, {i} nights a week. Fair winds!",
        "rejected": f"As an AI assistant, I cannot keep lights ({i}).",
    }
    for i in range(14)
]


def config(tmp: Path, name: str, **train) -> Path:
    data = tmp / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(p) for p in PAIRS) + "\n")
    t = {
        "output_dir": str(tmp / name),
        "max_steps": 3,
        "batch_size": 4,
        "grad_accum": 1,
        "logging_steps": 1,
        "save_steps": 3,
        "eval_steps": 3,
        "precision": "fp32",
        "threads": 1,
        "lr": 1e-3,
        **train,
    }
    return write_config(
        tmp / f"{name}.yaml",
        model={"name": "qwen3-tiny-random"},
        data={"path": str(data), "eval_split": 4, "max_length": 64},
        lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
        train=t,
    )


def train(cfg: Path) -> Path:
    import lorakit

    threads = torch.get_num_threads()
    try:
        return lorakit.train(cfg).path
    finally:
        torch.set_num_threads(threads)


def rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method,metric", [("orpo", "log_odds_ratio"), ("simpo", "margin"), ("kto", "kl")])
def test_method_trains_to_the_end_with_its_metrics(tmp_path, method, metric):
    run = train(config(tmp_path, method, method=method))
    logged = rows(run)
    steps = [r for r in logged if "loss" in r]
    assert len(steps) == 3 and all(metric in r and r["loss"] == r["loss"] for r in steps)
    assert any("eval_loss" in r for r in logged)
    assert (run / "adapter" / "adapter_model.safetensors").is_file()


def test_batch_times_accumulation_invariance(tmp_path, method="orpo"):
    """ORPO: its NLL is a token mean and its odds term a pair mean over the whole step, not per forward."""
    a = train(config(tmp_path, "a", method=method, batch_size=2, grad_accum=2, max_steps=2, eval_steps=None))
    b = train(config(tmp_path, "b", method=method, batch_size=4, grad_accum=1, max_steps=2, eval_steps=None))
    wa, wb = (load_file(str(r / "adapter" / "adapter_model.safetensors")) for r in (a, b))
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst <= 1e-6, worst


def test_eval_of_a_preference_run_scores_its_held_out_pairs(tmp_path):
    """`lorakit eval` of a DPO run: held-out loss on the chosen answers of its held-out pairs, preference
    accuracy and margins of base and tuned, side-by-side prompts from those pairs."""
    import lorakit

    run = train(config(tmp_path, "dpo", method="dpo", max_steps=2, eval_steps=None))
    result = lorakit.evaluate(run, max_new_tokens=4, max_prompts=2)
    pref = result["preference"]
    assert pref["pairs"] == 4 and {"accuracy", "margin"} <= pref["finetuned"].keys()
    assert pref["rewards"]["margin"] != 0  # two DPO steps moved the answers' log-probs
    assert result["loss"]["samples"] == 4 and "eval split" in result["loss"]["data"]
    assert [a["prompt"] for a in result["answers"]][0].startswith("Question")
    assert json.loads((run / "eval.json").read_text())["preference"] == pref
