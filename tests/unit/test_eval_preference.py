"""The eval's preference phase (lorakit.eval.preference) on qwen3-tiny-random with a real adapter: the
summed answer log-probs equal transformers' own (model(...).logits, log_softmax), base = adapter off, and
the implicit rewards are beta * (tuned - base)."""

import json

import pytest
import torch

from lorakit.config import LoraConfig, RunConfig
from lorakit.eval.preference import heldout_pairs, is_pairs_file, preference_scores
from lorakit.eval.summary import summary_rows

PAIRS = [
    {"prompt": "Who keeps the light?", "chosen": "I do, love. Fair winds!", "rejected": "As an AI, I cannot."},
    {"prompt": "Tea?", "chosen": "Strong, with heather honey.", "rejected": "Tea is a drink."},
    {"prompt": "Fog?", "chosen": "The grey thief.", "rejected": "Fog is small water droplets in the air."},
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory, lorakit_cache):
    from lorakit.inference.engine import Engine
    from lorakit.models import load_model, resolve_model
    from lorakit.models.lora import attach_lora

    folder = tmp_path_factory.mktemp("adapter")
    model = attach_lora(
        load_model(resolve_model("qwen3-tiny-random"), dtype="float32", device="cpu"), LoraConfig(r=4, alpha=8)
    )
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    model.save_pretrained(folder)
    return Engine.load("qwen3-tiny-random", {"finetuned": str(folder)}, dtype="float32", device="cpu")


def reference_logp(model, prompt: list[int], answer: list[int]) -> float:
    """transformers' own: full logits of the whole sequence, log_softmax, the answer tokens' sum."""
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits.float(), -1)[0]
    return float(sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(answer)))


def test_scores_equal_transformers_and_rewards_are_beta_times_the_shift(engine, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in PAIRS) + "\n")
    assert is_pairs_file(path)
    cfg = RunConfig(
        model={"name": "qwen3-tiny-random"}, data={"path": str(path)}, train={"method": "dpo", "dpo_beta": 0.5}
    )
    held = heldout_pairs(cfg, engine.tokenizer, str(path), bare=False)
    assert len(held["units"]) == 3 and held["source"] == str(path)
    pref = preference_scores(engine, held, cfg, "finetuned")

    expect = {}
    for name in ("base", "finetuned"):
        sums = []
        for u in held["units"]:
            if name == "base":
                with engine.model.disable_adapter():
                    sums.append([reference_logp(engine.model, u["prompt"], u[s]) for s in ("chosen", "rejected")])
            else:
                engine.model.set_adapter("finetuned")
                sums.append([reference_logp(engine.model, u["prompt"], u[s]) for s in ("chosen", "rejected")])
        expect[name] = sums
        assert pref[name]["logps_chosen"] == pytest.approx(sum(c for c, _ in sums) / 3, rel=1e-5)
        assert pref[name]["margin"] == pytest.approx(sum(c - r for c, r in sums) / 3, rel=1e-4, abs=1e-5)
        assert pref[name]["accuracy"] == sum(c > r for c, r in sums) / 3
    shift = [[0.5 * (t - b) for t, b in zip(tu, ba)] for tu, ba in zip(expect["finetuned"], expect["base"])]
    assert pref["rewards"]["margin"] == pytest.approx(sum(c - r for c, r in shift) / 3, rel=1e-4, abs=1e-5)
    assert pref["rewards"]["margin"] != 0  # the adapter changes the answers' log-probs
    rows = {label: (base, tuned) for label, base, tuned, _ in summary_rows({"preference": pref})}
    assert rows["held-out pairs, chosen answer more likely (of 3)"] == (
        round(pref["base"]["accuracy"] * 3),
        round(pref["finetuned"]["accuracy"] * 3),
    )


def test_an_sft_file_gives_no_pairs_and_says_what_to_pass(engine, tmp_path):
    path = tmp_path / "sft.json"
    path.write_text(json.dumps([{"instruction": "hi", "input": "", "output": "hello"}]))
    assert not is_pairs_file(path)
    held = heldout_pairs(RunConfig(), engine.tokenizer, str(path), bare=False)
    assert not held["units"] and "--data PAIRS_FILE" in held["skipped"]
    skipped = preference_scores(engine, held, RunConfig(), "finetuned")
    assert "skipped" in skipped and not summary_rows({"preference": skipped})
