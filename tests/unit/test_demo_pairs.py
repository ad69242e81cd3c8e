"""The preference demo's shipped pairs (benchmarks/dpo_demo_pairs.py) and its config: chosen is the
persona's own answer to every prompt of the demo data, rejected the base model's answer, the held-out
pairs are the 12 held-out questions, the pair reader takes both files, and configs/demo-dpo.yaml is a
valid DPO config that reads them."""

import json
from pathlib import Path

from lorakit.config import load_config
from lorakit.data.preference import load_preferences

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "src" / "lorakit" / "assets" / "demo"


def user_text(r: dict) -> str:
    return "\n".join(x for x in (r["instruction"], r.get("input", "")) if x and x.strip())


def test_pairs_are_the_persona_answer_against_the_base_answer():
    for source, shipped in (("persona.json", "persona_pairs.json"), ("heldout.json", "heldout_pairs.json")):
        records = json.loads((DEMO / source).read_text(encoding="utf-8"))
        pairs = json.loads((DEMO / shipped).read_text(encoding="utf-8"))
        expected = [(user_text(r), r["output"]) for r in records]
        got = [(p["prompt"], p["chosen"]) for p in pairs]
        assert set(got) <= set(expected) and len(got) >= len(expected) - 2, shipped  # equal sides dropped
        assert all(p["rejected"].strip() and p["rejected"] != p["chosen"] for p in pairs)
        # one base answer per prompt: a repeated prompt is answered the same (greedy)
        base = {}
        for p in pairs:
            assert base.setdefault(p["prompt"], p["rejected"]) == p["rejected"]
        assert len(load_preferences(str(DEMO / shipped))) == len(pairs)


def test_demo_dpo_config_reads_the_pairs():
    cfg = load_config(ROOT / "configs" / "demo-dpo.yaml")
    assert cfg.train.method == "dpo"
    assert (ROOT / cfg.data.path).is_file() and (ROOT / cfg.data.eval_path).is_file()
