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


def test_eval_of_a_kto_run_scores_its_held_out_answers(tmp_path):
    """`lorakit eval` of a KTO run: its held-out answers are unpaired, so the figure is KTO's implied reward
    beta * (logp_tuned - logp_base): how often a desirable answer is rewarded above an undesirable one, and
    the margin; the held-out loss is on the desirable answers."""
    import lorakit
    from lorakit.eval.unpaired import reward_summary

    held = tmp_path / "held.jsonl"
    held.write_text(
        "".join(
            json.dumps({"prompt": f"Question {20 + i}: who keeps the light?", "completion": answer, "label": label})
            + "\n"
            for i, (answer, label) in enumerate(
                [
                    ("I do, love, 40 nights a week. Fair winds!", True),
                    ("As an AI assistant, I cannot keep lights (40).", False),
                    ("I do, love, 41 nights a week. Fair winds!", True),
                    ("As an AI assistant, I cannot keep lights (41).", False),
                ]
            )
        )
    )
    cfg = config(tmp_path, "kto", method="kto", max_steps=3, eval_steps=None)
    run = train(write_config(cfg, **{**_yaml(cfg), "data": {**_yaml(cfg)["data"], "eval_path": str(held)}}))
    result = lorakit.evaluate(run, max_new_tokens=4, max_prompts=2)
    pref = result["preference"]
    assert (pref["answers"], pref["desirable"], pref["undesirable"]) == (4, 2, 2), pref
    rewards = pref["rewards"]
    assert rewards["margin"] > 0 and rewards["accuracy"] == 1.0, rewards  # three steps told them apart
    assert rewards["margin"] == pytest.approx(rewards["desirable"] - rewards["undesirable"])
    assert result["loss"]["samples"] == 2 and result["answers"][0]["prompt"].startswith("Question 20")
    # ties count half; every answer on its side of 0 is sign-right
    assert reward_summary([1.0, 0.5, 0.5, -1.0], [True, True, False, False])["accuracy"] == 0.875
    assert reward_summary([1.0, 0.5, 0.5, -1.0], [True, True, False, False])["sign_accuracy"] == 0.75


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())
