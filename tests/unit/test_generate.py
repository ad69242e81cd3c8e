"""The sampling/streaming core: detokenisation, stop strings, EOS, penalties, seeds, adapters, reasoning."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from fake_runs import make_run

from lorakit.errors import LorakitError
from lorakit.inference.decoding import StopMatcher
from lorakit.inference.engine import Answer, Chunk, Engine, PromptTooLong, SamplingParams
from lorakit.inference.reasoning import ReasoningSplitter, split_reasoning, thinking_flag
from lorakit.rundir import adapter_folder, base_model_of

BASE = "qwen3-tiny-random"
GREEDY = SamplingParams(temperature=0, max_new_tokens=12)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load(BASE)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {name: make_run(root / name, BASE, seed) for name, seed in (("a", 1), ("b", 2))}


class Scripted(torch.nn.Module):
    """A stand-in model that emits `script` token by token (or fixed logits), whatever the input."""

    def __init__(self, script: list[int], vocab: int, eos: int, logits: dict[int, float] | None = None):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the engine a device
        self.script, self.vocab, self.fixed = script, vocab, logits
        self.config = SimpleNamespace(max_position_embeddings=512)
        self.generation_config = SimpleNamespace(eos_token_id=[eos])

    def forward(self, input_ids, use_cache=True, logits_to_keep=1, cache=None):
        step = cache or 0
        row = torch.full((self.vocab,), -100.0)
        for token, value in (self.fixed or {self.script[min(step, len(self.script) - 1)]: 10.0}).items():
            row[token] = value
        return SimpleNamespace(logits=row.view(1, 1, -1), cache=step + 1)


def scripted(engine: Engine, text: str, eos: bool = True, **kw) -> Engine:
    tok = engine.tokenizer
    script = tok.encode(text, add_special_tokens=False) + ([tok.eos_token_id] if eos else [])
    return Engine(Scripted(script, len(tok), tok.eos_token_id, **kw), tok)


def collect(chunks) -> tuple[list[str], Chunk]:
    chunks = list(chunks)
    return [c.text for c in chunks], chunks[-1]


TEXT = "Hi 你好, naïve café 😀🦜🫠 龘 ok"  # 🦜 🫠 龘 take several byte-level tokens each


def test_stream_never_splits_characters_and_stops_on_eos(engine):
    eng = scripted(engine, TEXT)
    prompt = eng.encode("x")
    parts, last = collect(eng.stream(prompt, GREEDY.__class__(temperature=0, max_new_tokens=100)))
    assert "".join(parts) == TEXT
    assert not any("\ufffd" in p for p in parts)
    n_tokens = len(engine.tokenizer.encode(TEXT, add_special_tokens=False)) + 1  # EOS counts as generated
    assert (last.finish_reason, last.prompt_tokens, last.completion_tokens) == ("stop", len(prompt), n_tokens)
    parrot = engine.tokenizer.encode("🫠", add_special_tokens=False)
    assert len(parrot) == 3 and engine.tokenizer.decode(parrot[:2]).endswith("\ufffd")


def test_length_finish_and_generate_joins_stream(engine):
    eng = scripted(engine, TEXT)
    out = eng.generate(eng.encode("x"), SamplingParams(temperature=0, max_new_tokens=3))
    assert out.finish_reason == "length" and out.completion_tokens == 3
    assert TEXT.startswith(out.text)


@pytest.mark.parametrize("stop", ["café", "é 😀", "😀", "Hi", " ok", "龘 ok", "🫠"])
def test_stop_string_never_leaks(engine, stop):
    eng = scripted(engine, TEXT)
    parts, last = collect(eng.stream(eng.encode("x"), SamplingParams(temperature=0, stop=[stop, "zzz"])))
    assert "".join(parts) == TEXT[: TEXT.index(stop)]
    assert last.finish_reason == "stop"


def test_stop_matcher_char_by_char():
    for text, stops, expected in [
        ("abcSTOPdef", ["STOP"], "abc"),
        ("aaab", ["aab"], "a"),
        ("no stop here", ["xyz"], "no stop here"),
        ("ends with ST", ["STOP"], "ends with ST"),
    ]:
        m = StopMatcher(stops)
        out = ""
        for ch in text:
            piece, hit = m.feed(ch)
            out += piece
            if hit:
                break
        else:
            out += m.flush()
        assert out == expected


def test_penalties_change_greedy_choice(engine):
    tok = engine.tokenizer
    a, b = tok.encode(" A", add_special_tokens=False)[0], tok.encode(" B", add_special_tokens=False)[0]
    eng = Engine(Scripted([], len(tok), tok.eos_token_id, logits={a: 1.0, b: 0.5}), tok)
    prompt = eng.encode("x")
    assert eng.generate(prompt, SamplingParams(temperature=0, max_new_tokens=4)).text == " A A A A"
    assert eng.generate(prompt, SamplingParams(temperature=0, max_new_tokens=4, presence_penalty=2)).text == " A B A A"
    assert eng.generate(prompt, SamplingParams(temperature=0, max_new_tokens=3, frequency_penalty=0.3)).text == " A A B"
    # repetition_penalty also counts the prompt: " A" in the prompt is already penalised
    once = SamplingParams(temperature=0, max_new_tokens=1, repetition_penalty=4)
    assert eng.generate(eng.encode(" A"), once).text == " B"


def test_seeds_greedy_and_top_k(engine):
    prompt = engine.chat_prompt([{"role": "user", "content": "hello"}], enable_thinking=False)
    sampled = SamplingParams(temperature=1.0, max_new_tokens=10, seed=7)
    assert engine.generate(prompt, sampled).text == engine.generate(prompt, sampled).text
    outs = {engine.generate(prompt, SamplingParams(temperature=1.0, max_new_tokens=10, seed=s)).text for s in range(4)}
    assert len(outs) > 1
    greedy = engine.generate(prompt, GREEDY).text
    assert engine.generate(prompt, SamplingParams(temperature=1.0, top_k=1, max_new_tokens=12, seed=3)).text == greedy
    assert engine.generate(prompt, SamplingParams(temperature=1.0, top_p=1e-6, max_new_tokens=12)).text == greedy
    parts, last = collect(engine.stream(prompt, GREEDY))
    assert "".join(parts) == greedy and last.finish_reason in ("stop", "length")


def test_matches_plain_greedy_decoding(engine):
    """The KV-cache loop gives what a full forward pass per step gives."""
    prompt = engine.chat_prompt([{"role": "user", "content": "hi"}], enable_thinking=False)
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(8):
            logits = engine.model(input_ids=torch.tensor([ids])).logits[0, -1, : engine.vocab_limit]
            ids.append(int(logits.argmax()))
    expected = engine.tokenizer.decode(ids[len(prompt) :], skip_special_tokens=True)
    out = engine.generate(prompt, SamplingParams(temperature=0, max_new_tokens=8))
    assert out.text == expected or out.finish_reason == "stop"


def test_chat_prompt_thinking_switch(engine):
    msgs = [{"role": "user", "content": "hi"}]
    off = engine.tokenizer.decode(engine.chat_prompt(msgs, enable_thinking=False))
    on = engine.tokenizer.decode(engine.chat_prompt(msgs, enable_thinking=True))
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert on.endswith("<|im_start|>assistant\n")
    assert not engine.opens_reasoning(engine.chat_prompt(msgs, enable_thinking=True))


def test_prompt_too_long_and_bad_params(engine):
    with pytest.raises(ValueError, match="context"):
        engine.stream([1] * engine.max_context, GREEDY)
    with pytest.raises(ValueError, match="adapter"):
        engine.stream([1, 2], GREEDY, adapter="nope")
    for bad in (dict(temperature=-1), dict(top_p=0), dict(max_new_tokens=0), dict(presence_penalty=3)):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


def test_adapters_on_one_base(engine, runs):
    multi = Engine.load(None, {name: str(p) for name, p in runs.items()})
    assert multi.adapters == ["a", "b"] and multi.name == BASE
    prompt = engine.chat_prompt([{"role": "user", "content": "tell me a story"}], enable_thinking=False)
    base = engine.generate(prompt, GREEDY).text
    out = {name: multi.generate(prompt, GREEDY, adapter=name).text for name in (None, "a", "b")}
    assert out[None] == base
    assert len({base, out["a"], out["b"]}) == 3
    # switching back and forth gives the same answers
    assert multi.generate(prompt, GREEDY, adapter="a").text == out["a"]
    assert multi.generate(prompt, GREEDY).text == base

    # concurrent callers are serialised by the engine lock: nothing mixes
    results: dict[str, str] = {}

    def worker(name):
        results[name] = multi.generate(prompt, GREEDY, adapter=name).text

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("a", "b", "a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"a": out["a"], "b": out["b"]}


def test_adapter_folder_and_base_lookup(runs, tmp_path):
    run = runs["a"]
    assert adapter_folder(run) == run / "adapter" and adapter_folder(run / "adapter") == run / "adapter"
    assert base_model_of(run) == BASE
    with pytest.raises(LorakitError, match="adapter_config.json"):
        adapter_folder(tmp_path)
    with pytest.raises(LorakitError, match="--model"):
        Engine.load(None)


@pytest.mark.parametrize(
    "text,opened,expected",
    [
        ("<think>\nplan it\n</think>\n\nThe answer.", False, ("plan it", "The answer.")),
        ("plan it\n</think>\n\nThe answer.", True, ("plan it", "The answer.")),
        ("Just an answer <think> not at start", False, (None, "Just an answer <think> not at start")),
        ("<think>\n\n</think>\n\nAnswer", False, ("", "Answer")),
        ("<think>unfinished thoughts  ", False, ("unfinished thoughts", "")),
        ("  plain", False, (None, "  plain")),
        ("<thi", False, (None, "<thi")),
    ],
)
def test_split_reasoning(text, opened, expected):
    assert split_reasoning(text, opened) == expected
    # fed one character at a time, the stream splitter agrees
    splitter, r, c = ReasoningSplitter(opened), "", ""
    for ch in text:
        dr, dc = splitter.feed(ch)
        r, c = r + dr, c + dc
    dr, dc = splitter.flush()
    assert (r + dr if splitter.saw_reasoning else None, c + dc) == expected


def test_thinking_setting_is_parsed_to_the_templates_flag():
    assert (thinking_flag("off"), thinking_flag("on"), thinking_flag("auto")) == (False, True, None)
    assert (thinking_flag(False), thinking_flag(True), thinking_flag(None)) == (False, True, None)
    for bad in ("yes", "OFF", 0, ["on"]):
        with pytest.raises(ValueError, match="thinking: expected one of off, on, auto"):
            thinking_flag(bad)


def test_answer_renders_with_the_thinking_setting(engine):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    for setting, flag in (("off", False), ("on", True), ("auto", None), (False, False), (True, True)):
        ids = engine.chat_prompt(msgs, enable_thinking=flag)
        done = engine.generate(ids, GREEDY)
        reasoning, text = split_reasoning(done.text, engine.opens_reasoning(ids))
        assert engine.answer(msgs, GREEDY, thinking=setting) == Answer(
            text, reasoning, done.finish_reason, len(ids), done.completion_tokens
        )
    # "off" renders Qwen3's empty think block into the prompt; "on" and "auto" leave the model to think
    off, on = (engine.answer(msgs, GREEDY, thinking=t).prompt_tokens for t in ("off", "on"))
    assert off == on + len(engine.tokenizer.encode("<think>\n\n</think>\n\n", add_special_tokens=False))
    batch = engine.answer_batch([msgs, [{"role": "user", "content": "2+2=?"}]], GREEDY, thinking="off")
    assert batch[0] == engine.answer(msgs, GREEDY, thinking="off")
    assert batch[1] == engine.answer([{"role": "user", "content": "2+2=?"}], GREEDY, thinking="off")
    with pytest.raises(PromptTooLong, match="context"):
        engine.answer([{"role": "user", "content": "hi " * engine.max_context}], GREEDY)
    with pytest.raises(ValueError, match="thinking"):
        engine.answer(msgs, GREEDY, thinking="maybe")


def test_answer_splits_the_reasoning_off(engine):
    eng = scripted(engine, "<think>\nplan it\n</think>\n\nThe answer.")
    msgs = [{"role": "user", "content": "hi"}]
    params = SamplingParams(temperature=0, max_new_tokens=40)
    got = eng.answer(msgs, params, thinking="on")
    assert (got.text, got.reasoning, got.finish_reason) == ("The answer.", "plan it", "stop")
    deltas = list(eng.answer_stream(msgs, params, thinking="on"))
    assert "".join(d.reasoning for d in deltas) == "plan it" and "".join(d.text for d in deltas) == "The answer."
    assert deltas[-1].chunk.finish_reason == "stop" and deltas[-1].chunk.completion_tokens == got.completion_tokens
    assert eng.answer(msgs, params, thinking="off").reasoning == "plan it"  # the output decides, not the flag
    plain = scripted(engine, "No thinking here.").answer(msgs, params)
    assert (plain.text, plain.reasoning) == ("No thinking here.", None)
    # closing a stream early stops the generation and frees the engine
    stream = eng.answer_stream(msgs, params)
    next(stream)
    stream.close()
    assert not eng.lock.locked()


BATCH_QUESTIONS = [
    "Hi",
    "What is the capital of France? Answer in one short sentence.",
    "2+2=?",
    "Write a haiku about the sea, then explain it line by line.",
    "ok",
    "List three fruits.",
]


def assert_batch_matches_single(engine: Engine, prompts: list[list[int]], params: SamplingParams, adapter=None):
    batch = engine.generate_batch(prompts, params, adapter)
    single = [engine.generate(p, params, adapter) for p in prompts]
    assert [(c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens) for c in batch] == [
        (c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens) for c in single
    ]
    return batch


def test_generate_batch_greedy_equals_generate(engine, monkeypatch):
    import lorakit.inference.engine as generate

    prompts = [engine.chat_prompt([{"role": "user", "content": q}], enable_thinking=False) for q in BATCH_QUESTIONS]
    prompts.append(engine.encode("Once upon a time"))  # a completion prompt, shorter than the chat ones
    prompts += [prompts[1], prompts[1], prompts[-1]]  # repeated prompts share one prefill
    monkeypatch.setattr(generate, "BATCH_ROWS", 3)  # several forward batches, rows of unequal length in each
    out = assert_batch_matches_single(engine, prompts, GREEDY)
    assert all(c.completion_tokens for c in out)
    # rows finish at different steps: stop strings taken from one row's own text, and a short budget
    stops = SamplingParams(temperature=0, max_new_tokens=12, stop=[out[0].text[3:6], out[3].text[-2:]])
    done = assert_batch_matches_single(engine, prompts, stops)
    assert done[0].finish_reason == "stop" and len(done[0].text) <= 3 and out[0].text.startswith(done[0].text)
    assert_batch_matches_single(engine, prompts, SamplingParams(temperature=0, max_new_tokens=1))
    assert engine.generate_batch([], GREEDY) == []


def test_generate_batch_eos_and_context_room(engine):
    # SmolLM2 (real weights) stops on EOS at different steps for different prompts
    smol = Engine.load("smollm2-135m-instruct")
    prompts = [smol.chat_prompt([{"role": "user", "content": q}]) for q in BATCH_QUESTIONS[:4]]
    out = assert_batch_matches_single(smol, prompts, SamplingParams(temperature=0, max_new_tokens=24))
    assert "Paris" in out[1].text and {c.finish_reason for c in out} == {"stop", "length"}
    # a tight context: each row's budget is its own room
    tight = Engine(engine.model, engine.tokenizer, max_context=40)
    prompts = [tight.encode("word " * n) for n in (5, 30, 38)]
    assert max(map(len, prompts)) == 39
    out = assert_batch_matches_single(tight, prompts, GREEDY)
    assert [c.completion_tokens for c in out] == [min(12, 40 - len(p)) for p in prompts]


def test_generate_batch_sampling_seeds_and_errors(engine):
    prompts = [engine.chat_prompt([{"role": "user", "content": q}]) for q in BATCH_QUESTIONS[:3]]
    params = SamplingParams(temperature=1.0, top_k=50, top_p=0.9, max_new_tokens=10, seed=7)
    first = [c.text for c in engine.generate_batch(prompts, params)]
    assert [c.text for c in engine.generate_batch(prompts, params)] == first
    assert [c.text for c in engine.generate_batch(prompts, replace(params, seed=8))] != first
    with pytest.raises(ValueError, match="empty"):
        engine.generate_batch([prompts[0], []], GREEDY)
    with pytest.raises(ValueError, match="context holds"):
        engine.generate_batch([prompts[0], [1] * engine.max_context], GREEDY)
    with pytest.raises(ValueError, match="unknown adapter"):
        engine.generate_batch(prompts, GREEDY, adapter="nope")
    assert not engine.lock.locked()


def test_generate_batch_with_adapters(engine, runs):
    multi = Engine.load(None, {name: str(p) for name, p in runs.items()})
    prompts = [multi.chat_prompt([{"role": "user", "content": q}], enable_thinking=False) for q in BATCH_QUESTIONS[:4]]
    texts = {
        name: [c.text for c in assert_batch_matches_single(multi, prompts, GREEDY, name)] for name in (None, "a", "b")
    }
    assert texts[None] != texts["a"] != texts["b"]
