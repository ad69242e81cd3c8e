"""The lm-eval bridge's parts: Engine.score and streamed logprobs against transformers, the model class's
chat template and registration, the headline metric, and the report's benchmarks section."""

import threading
from types import SimpleNamespace

import pytest
import torch

from lorakit.eval.benchmarks import _headline
from lorakit.eval.report import render_report


@pytest.fixture(scope="module")
def engine():
    from lorakit.inference.engine import Engine

    return Engine.load("qwen3-tiny-random", dtype="float32")


def _reference(engine, ids):
    with torch.no_grad():
        return engine.model(torch.tensor([ids])).logits[0].float().log_softmax(-1)


def test_score_batches_of_mixed_lengths_equal_one_sequence_at_a_time(engine):
    seqs = [[9707, 11, 1879, 0, 30, 42, 7], [100, 200], [5, 6, 7, 8]]
    got = engine.score(seqs, last=[3, 1, 3], top=4)
    for seq, scored in zip(seqs, got):
        ref = _reference(engine, seq)
        n = len(scored)
        assert [t.token for t in scored] == seq[-n:]
        want = [float(ref[p - 1, seq[p]]) for p in range(len(seq) - n, len(seq))]
        assert [t.logprob for t in scored] == pytest.approx(want, abs=1e-4)
        top = ref[len(seq) - n - 1, : engine.vocab_limit].topk(4)
        assert [v for _, v in scored[0].top] == pytest.approx(top.values.tolist(), abs=1e-4)
    with pytest.raises(ValueError):
        engine.score([[1, 2]], last=[2])


def test_streamed_logprobs_are_the_raw_log_softmax(engine):
    from lorakit.inference.engine import SamplingParams

    prompt = [9707, 11, 1879]
    done = engine.generate(
        prompt, SamplingParams(temperature=1.5, top_k=5, max_new_tokens=5, seed=2, repetition_penalty=1.3), logprobs=2
    )
    ids = prompt + [t.token for t in done.logprobs]
    assert len(done.logprobs) == done.completion_tokens
    ref = _reference(engine, ids)
    want = [float(ref[len(prompt) + k - 1, t]) for k, t in enumerate(ids[len(prompt) :])]
    assert [t.logprob for t in done.logprobs] == pytest.approx(want, abs=1e-4)
    assert all(len(t.top) == 2 for t in done.logprobs)


def test_chat_template_follows_the_thinking_setting():
    from lorakit import models
    from lorakit.eval.harness import LorakitLM

    tok = models.load_tokenizer(models.resolve_model("qwen3-tiny-random"))
    fake = SimpleNamespace(tokenizer=tok, tokenizer_lock=threading.Lock(), name="qwen3-tiny-random", max_context=64)
    chat = [{"role": "user", "content": "2+2?"}]
    off = LorakitLM(fake, None, enable_thinking=False).apply_chat_template(chat)
    on = LorakitLM(fake, None, enable_thinking=True).apply_chat_template(chat)
    assert off.endswith("<think>\n\n</think>\n\n") and on.endswith("<|im_start|>assistant\n")


def test_registered_with_lm_eval():
    from lm_eval.api.registry import get_model

    from lorakit.eval.harness import LorakitLM

    assert get_model("lorakit") is LorakitLM


def test_headline_metric_prefers_acc():
    assert _headline({"alias": "x", "acc_norm,none": 0.3, "acc,none": 0.2, "acc_stderr,none": 0.01}) == ("acc", "none")
    assert _headline({"exact_match,strict-match": 0.5, "exact_match_stderr,strict-match": 0.1}) == (
        "exact_match",
        "strict-match",
    )
    assert _headline({"alias": "x"}) is None


def test_report_with_benchmarks_only_escapes_names():
    side = {"value": 0.25, "stderr": 0.1}
    result = {
        "run_dir": "/r",
        "base_model": "m",
        "benchmarks": {
            "tasks": ["<b>t"],
            "created": "now",
            "timing": {"total_s": 3},
            "settings": {
                "lm_eval": "0.4.13",
                "chat_template": "the model's chat template",
                "thinking": "off",
                "system": None,
                "num_fewshot": None,
                "limit": 5,
            },
            "results": [
                {
                    "task": "<b>t",
                    "group": False,
                    "metric": "acc",
                    "n": 5,
                    "base": side,
                    "finetuned": {"value": 0.5, "stderr": 0.2},
                    "change": 0.25,
                    "lower_is_better": False,
                }
            ],
        },
    }
    page = render_report(result, [])
    assert "Benchmarks (lm-evaluation-harness 0.4.13)" in page and "&lt;b&gt;t" in page and "<b>t" not in page
    assert "0.2500 ± 0.1000" in page and "+0.2500" in page and "thinking off" in page
