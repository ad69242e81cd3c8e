"""Replay's answer cache: one file per model and settings, answers reused across shares, the demo's bundled."""

import json
from pathlib import Path

import pytest

from lorakit import load_config
from lorakit.data import replay
from lorakit.data.replay import BUNDLED_ANSWERS, base_answers, bundled_prompts, cache_key

REPO = Path(__file__).resolve().parents[2]


class Counting:
    """A stand-in base model that answers "<prompt> - answered." and records what it was asked."""

    def __init__(self):
        self.asked: list[str] = []

    def __call__(self, messages):
        prompts = [m[-1]["content"] for m in messages]
        self.asked += prompts
        return [f"{p} - answered. And then cut" for p in prompts]


def test_answers_are_cached_per_prompt_and_reused_by_a_larger_share(tmp_path, monkeypatch):
    monkeypatch.setattr(replay, "BUNDLED_ANSWERS", tmp_path / "bundled")
    cache = tmp_path / "k.json"
    model = Counting()
    answers, origin = base_answers(["a?", "b?"], None, model, cache)
    assert answers == ["a? - answered.", "b? - answered."]  # cut back to the finished sentence
    assert origin == {"replay_generated": 2, "replay_bundled": 0}
    answers, origin = base_answers(["b?", "a?", "c?"], None, model, cache)
    assert model.asked == ["a?", "b?", "c?"] and origin["replay_generated"] == 1
    assert answers == ["b? - answered.", "a? - answered.", "c? - answered."]
    assert [e["prompt"] for e in json.loads(cache.read_text())] == ["a?", "b?", "c?"]


def test_a_damaged_cache_is_regenerated(tmp_path, monkeypatch):
    monkeypatch.setattr(replay, "BUNDLED_ANSWERS", tmp_path / "bundled")
    cache = tmp_path / "k.json"
    cache.write_text('[{"prompt": "a?", "answ')
    answers, origin = base_answers(["a?"], None, Counting(), cache)
    assert answers == ["a? - answered."] and origin["replay_generated"] == 1
    assert json.loads(cache.read_text()) == [{"prompt": "a?", "answer": "a? - answered."}]


def test_bundled_answers_are_used_before_generating(tmp_path, monkeypatch):
    monkeypatch.setattr(replay, "BUNDLED_ANSWERS", tmp_path / "bundled")
    (tmp_path / "bundled").mkdir()
    (tmp_path / "bundled" / "k.json").write_text(json.dumps([{"prompt": "a?", "answer": "Shipped."}]))
    model = Counting()
    answers, origin = base_answers(["a?", "b?"], None, model, tmp_path / "k.json")
    assert answers == ["Shipped.", "b? - answered."] and model.asked == ["b?"]
    assert origin == {"replay_generated": 1, "replay_bundled": 1}


def test_the_demo_models_answers_are_bundled_for_every_english_prompt():
    """Fails when the demo model, its tokenizer or template, or the prompts change: rerun
    benchmarks/replay_answers.py so the first demo run does not generate them."""
    from lorakit.demo import DEMO_DIR
    from lorakit.models import load_tokenizer, resolve_model
    from lorakit.training.replay_answers import replay_fingerprint

    # `lorakit demo` reads the packaged copy; configs/demo.yaml is the same file for `lorakit train`
    assert (DEMO_DIR / "demo.yaml").read_text() == (REPO / "configs" / "demo.yaml").read_text()
    cfg = load_config(DEMO_DIR / "demo.yaml")
    path = resolve_model(cfg.model.name)
    key = cache_key(replay_fingerprint(path, load_tokenizer(path)), cfg.data.system, cfg.data.thinking)
    bundled = BUNDLED_ANSWERS / f"{key}.json"
    assert bundled.is_file(), "no bundled replay answers for the demo model: run benchmarks/replay_answers.py"
    entries = json.loads(bundled.read_text(encoding="utf-8"))
    answered = {e["prompt"]: e["answer"] for e in entries}
    assert set(bundled_prompts("en")) <= set(answered)
    assert sum(bool(a) for a in answered.values()) >= 0.9 * len(answered)


@pytest.mark.parametrize("language", ["en", "zh"])
def test_bundled_prompts_are_unique(language):
    prompts = bundled_prompts(language)
    assert len(prompts) == len(set(prompts)) >= 90
