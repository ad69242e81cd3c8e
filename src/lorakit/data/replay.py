"""Replay: general prompts answered once by the base model itself, mixed into the training samples.

A persona fine-tune on a few hundred in-character answers also teaches the model to answer every
question in character, and it forgets facts (docs/benchmarks.md, "Forgetting"). Training on a share
of the base model's own answers to general prompts pulls those answers back toward the base: the
fine-tune learns the persona where the data has it and keeps the base's behaviour elsewhere.

The bundled prompts (assets/replay/en.json, zh.json) were written for lorakit; none of them is a
retention question (tests check the sets are disjoint), so replay cannot inflate the retention score.
The answers are generated once per (model, prompts, settings) and cached by content hash.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from lorakit.atomic import write_json
from lorakit.data.conversation import Conversation, Message
from lorakit.errors import LorakitError

REPLAY_DIR = Path(__file__).resolve().parents[1] / "assets" / "replay"
# Answers are short: enough for the base's way of answering, cheap to generate on a CPU.
MAX_NEW_TOKENS = 64
CACHE_VERSION = 1
_SENTENCE_END = tuple(".!?。！？\n")

# messages -> answer texts, for many prompts at once (the training side supplies it: data/ does not
# load models).
Answerer = Callable[[list[list[dict]]], list[str]]


def bundled_prompts(language: str) -> list[str]:
    """The bundled replay prompts for "en" or "zh"."""
    return json.loads((REPLAY_DIR / f"{language}.json").read_text(encoding="utf-8"))


def load_replay_prompts(cfg, language: str) -> tuple[list[str], str]:
    """The prompts to replay and where they came from: data.replay_prompts, else the bundled set."""
    if not cfg.replay_prompts:
        return bundled_prompts(language), f"lorakit's bundled {language} replay prompts"
    path = Path(cfg.replay_prompts)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LorakitError(f"data.replay_prompts: cannot read {path}: {e}") from None
    if path.suffix.lower() == ".json":
        try:
            prompts = json.loads(text)
        except json.JSONDecodeError as e:
            raise LorakitError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    else:  # plain text, one prompt per line
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise LorakitError(f"{path}: expected a JSON list of prompt strings (or a text file, one per line)")
    return [p.strip() for p in prompts], str(path)


def replay_count(share: float, n_train: int) -> int:
    """Replay samples so that they are `share` of the training samples after mixing."""
    return round(share * n_train / (1 - share)) if share > 0 else 0


def cache_key(model_fingerprint: str, prompts: list[str], system: str | None, thinking: str) -> str:
    """Hash of everything that changes the answers: model, prompts, system prompt and settings."""
    h = hashlib.sha256(f"lorakit-replay-v{CACHE_VERSION}".encode())
    h.update(json.dumps({"model": model_fingerprint, "prompts": prompts, "system": system, "thinking": thinking,
                         "max_new_tokens": MAX_NEW_TOKENS, "decoding": "greedy"}, ensure_ascii=False).encode())
    return h.hexdigest()[:24]


def model_fingerprint(model_path: Path, tokenizer_fingerprint: str) -> str:
    """The model's config and the names and sizes of its weight files, plus the tokenizer's hash.

    Sizes rather than bytes: hashing the weights of a 4B model would take longer than the replay.
    """
    model_path = Path(model_path)
    h = hashlib.sha256(tokenizer_fingerprint.encode())
    config = model_path / "config.json"
    if config.is_file():
        h.update(config.read_bytes())
    for f in sorted(model_path.glob("*.safetensors")) + sorted(model_path.glob("*.bin")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()


def complete_sentences(text: str) -> str:
    """A cut-off answer up to its last finished sentence, so training does not teach stopping mid-word."""
    text = text.strip()
    if not text or text.endswith(_SENTENCE_END):
        return text
    cut = max(text.rfind(c) for c in _SENTENCE_END)
    return text[:cut + 1].strip() if cut > len(text) // 3 else text


def base_answers(prompts: list[str], system: str | None, answer: Answerer, cache_file: Path) -> list[str]:
    """The base model's answers to `prompts`, read from `cache_file` or generated and written there."""
    if cache_file.is_file():
        try:
            cached = json.loads(cache_file.read_text(encoding="utf-8"))
            if [c["prompt"] for c in cached] == prompts:
                return [c["answer"] for c in cached]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged cache is regenerated
    messages = [([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": p}]
                for p in prompts]
    answers = [complete_sentences(a) for a in answer(messages)]
    try:
        write_json(cache_file, [{"prompt": p, "answer": a} for p, a in zip(prompts, answers)])
    except OSError as e:
        raise LorakitError(f"{cache_file}: cannot write the replay cache: {e.strerror or e}") from None
    return answers


def replay_conversations(cfg, n_train: int, language: str, answer: Answerer, fingerprint: str,
                         cache_dir: Path) -> tuple[list[Conversation], dict]:
    """Conversations to add to the training split for `cfg.replay` (a DataConfig), and what was done."""
    want = replay_count(cfg.replay, n_train)
    if not want:
        return [], {}
    prompts, source = load_replay_prompts(cfg, language)
    # Every prompt at most once: repeating the base's answers would weigh them over the persona's.
    prompts = prompts[:want]
    cache_file = Path(cache_dir) / f"{cache_key(fingerprint, prompts, cfg.system, cfg.thinking)}.json"
    answers = base_answers(prompts, cfg.system, answer, cache_file)
    convs = []
    for i, (p, a) in enumerate(zip(prompts, answers)):
        if not a:
            continue  # the base said nothing: nothing to keep
        msgs = ([Message("system", cfg.system)] if cfg.system else []) + [Message("user", p), Message("assistant", a)]
        convs.append(Conversation(msgs, f"replay:{source}[{i}]"))
    stats = {"replay_samples": len(convs), "replay_wanted": want, "replay_source": source,
             "replay_cache": str(cache_file)}
    return convs, stats


def add_replay(cfg, data, tokenizer, answer: Answerer, fingerprint: str, cache_dir: Path):
    """`data` (PreparedData) with the replay samples appended to its training split; stats updated."""
    from lorakit.data.language import detect_language
    from lorakit.data.samples import SampleBuilder
    from lorakit.data.template import IGNORE, tokenize_conversation

    language = cfg.language
    if language == "auto":
        texts = [tokenizer.decode(s["input_ids"], skip_special_tokens=True) for s in data.train[:200]]
        language = detect_language(texts)
    convs, stats = replay_conversations(cfg, len(data.train), language, answer, fingerprint, cache_dir)
    builder = SampleBuilder()
    for i in range(len(data.train)):
        builder.add(data.train[i])
    added = 0
    for c in convs:
        sample = tokenize_conversation(tokenizer, c, thinking=cfg.thinking, train_on=cfg.train_on,
                                       max_length=cfg.max_length)
        if any(label != IGNORE for label in sample["labels"]):  # truncation may leave no answer token
            builder.add(sample)
            added += 1
    data.train = builder.build()
    data.stats = {**data.stats, **stats, "replay_samples": added, "replay_language": language}
    return data
