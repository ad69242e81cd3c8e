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
# Answers shipped with lorakit, named as cache files are (benchmarks/replay_answers.py writes them).
BUNDLED_ANSWERS = REPLAY_DIR / "answers"
# Answers are short: enough for the base's way of answering, cheap to generate on a CPU.
MAX_NEW_TOKENS = 64
CACHE_VERSION = 2  # 2: one file per model and settings, any prompts
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


def cache_key(model_fingerprint: str, system: str | None, thinking: str) -> str:
    """Hash of everything that changes an answer except its prompt: model, system prompt and settings.

    One cache file per key holds every prompt answered so far, so a larger share or another prompt
    order reuses the answers already made (greedy answers do not depend on which prompts share a batch).
    """
    h = hashlib.sha256(f"lorakit-replay-v{CACHE_VERSION}".encode())
    h.update(
        json.dumps(
            {
                "model": model_fingerprint,
                "system": system,
                "thinking": thinking,
                "max_new_tokens": MAX_NEW_TOKENS,
                "decoding": "greedy",
            },
            ensure_ascii=False,
        ).encode()
    )
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
    return text[: cut + 1].strip() if cut > len(text) // 3 else text


def _read_answers(path: Path) -> dict[str, str]:
    """prompt -> answer from a cache file; {} when it is missing or damaged (then it is regenerated)."""
    try:
        return {
            c["prompt"]: c["answer"]
            for c in json.loads(path.read_text(encoding="utf-8"))
            if isinstance(c["prompt"], str) and isinstance(c["answer"], str)
        }
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def base_answers(prompts: list[str], system: str | None, answer: Answerer, cache_file: Path) -> tuple[list[str], dict]:
    """The base model's answers to `prompts`, and where they came from.

    Read from `cache_file`, else from lorakit's bundled answers of the same key (assets/replay/answers/:
    the demo model's, so a first demo run does not spend minutes generating them), else generated; the
    cache file is then rewritten with every answer it held plus the new ones.
    """
    known = _read_answers(cache_file)
    bundled = _read_answers(BUNDLED_ANSWERS / cache_file.name)
    missing = [p for p in prompts if p not in known and p not in bundled]
    if missing:
        messages = [
            ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": p}]
            for p in missing
        ]
        known.update(zip(missing, (complete_sentences(a) for a in answer(messages))))
    from_bundle = [p for p in prompts if p not in known]
    if missing or from_bundle:
        known.update((p, bundled[p]) for p in from_bundle)
        try:
            write_json(cache_file, [{"prompt": p, "answer": a} for p, a in known.items()])
        except OSError as e:
            raise LorakitError(f"{cache_file}: cannot write the replay cache: {e.strerror or e}") from None
    origin = {"replay_generated": len(missing), "replay_bundled": len(from_bundle)}
    return [known[p] for p in prompts], origin


def replay_conversations(
    cfg, n_train: int, language: str, answer: Answerer, fingerprint: str, cache_dir: Path
) -> tuple[list[Conversation], dict]:
    """Conversations to add to the training split for `cfg.replay` (a DataConfig), and what was done."""
    want = replay_count(cfg.replay, n_train)
    if not want:
        return [], {}
    prompts, source = load_replay_prompts(cfg, language)
    # Every prompt at most once: repeating the base's answers would weigh them over the persona's.
    if len(prompts) < want:
        print(
            f"replay: data.replay={cfg.replay:g} wants {want} replay samples but {source} has "
            f"{len(prompts)} prompts; using each once (share {len(prompts) / (n_train + len(prompts)):.1%}); "
            "more prompts: data.replay_prompts",
            flush=True,
        )
    prompts = prompts[:want]
    cache_file = Path(cache_dir) / f"{cache_key(fingerprint, cfg.system, cfg.thinking)}.json"
    answers, origin = base_answers(prompts, cfg.system, answer, cache_file)
    convs = []
    for i, (p, a) in enumerate(zip(prompts, answers)):
        if not a:
            continue  # the base said nothing: nothing to keep
        msgs = ([Message("system", cfg.system)] if cfg.system else []) + [Message("user", p), Message("assistant", a)]
        convs.append(Conversation(msgs, f"replay:{source}[{i}]"))
    stats = {
        "replay_samples": len(convs),
        "replay_wanted": want,
        "replay_source": source,
        "replay_cache": str(cache_file),
        **origin,
    }
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
        sample = tokenize_conversation(
            tokenizer, c, thinking=cfg.thinking, train_on=cfg.train_on, max_length=cfg.max_length
        )
        if any(label != IGNORE for label in sample["labels"]):  # truncation may leave no answer token
            builder.add(sample)
            added += 1
    data.train = builder.build()
    data.stats = {**data.stats, **stats, "replay_samples": added, "replay_language": language}
    return data
