"""Prompts to put to the base and the fine-tuned model: from a --prompts file or from held-out data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lorakit.errors import LorakitError

# Keys that hold the question in a prompt record, in the order they are looked for; the first two
# follow alpaca, `question` follows retention.json, `prompt` follows prompt/completion data.
_QUESTION_KEYS = ("instruction", "question", "prompt")
_ANSWER_KEYS = ("output", "answer", "completion")


@dataclass
class Prompt:
    """One thing to ask: chat `messages` ending with a user turn, the `text` shown for it, and the
    reference answer when the source had one."""

    messages: list[dict]
    text: str
    reference: str | None = None


def user_prompt(text: str, system: str | None = None, reference: str | None = None) -> Prompt:
    """A single-turn prompt, with the run's system prompt first when it trained with one."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return Prompt(messages, text, reference)


def load_prompts(path: str | Path, system: str | None = None) -> list[Prompt]:
    """Read a prompts file: a JSON list (of strings or records), JSONL (one string or record per line),
    or plain text with one prompt per line. Records are alpaca-like: instruction (+ input) or
    question or prompt, with output / answer / completion as the reference."""
    path = Path(path)
    if not path.is_file():
        raise LorakitError(f"{path}: prompts file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LorakitError(f"{path}: prompts file is not UTF-8 text") from None
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise LorakitError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
        if not isinstance(items, list):
            raise LorakitError(f"{path}: expected a JSON list of strings or records")
        entries = [(f"{path}[{i}]", item) for i, item in enumerate(items)]
    elif suffix == ".jsonl":
        entries = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    entries.append((f"{path}:{n}", json.loads(line)))
                except json.JSONDecodeError as e:
                    raise LorakitError(f"{path}:{n}: invalid JSON: {e.msg}") from None
    else:
        entries = [(f"{path}:{n}", line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    prompts = [_entry_prompt(where, item, system) for where, item in entries]
    if not prompts:
        raise LorakitError(f"{path}: no prompts in the file")
    return prompts


def _entry_prompt(where: str, item, system: str | None) -> Prompt:
    if isinstance(item, str):
        if not item.strip():
            raise LorakitError(f"{where}: empty prompt")
        return user_prompt(item, system)
    if not isinstance(item, dict):
        raise LorakitError(f"{where}: expected a string or a record, got {type(item).__name__}")
    key = next((k for k in _QUESTION_KEYS if isinstance(item.get(k), str) and item[k].strip()), None)
    if key is None:
        raise LorakitError(f"{where}: record has no {' / '.join(_QUESTION_KEYS)} text")
    question = item[key]
    if key == "instruction" and isinstance(item.get("input"), str) and item["input"].strip():
        question = f"{question}\n\n{item['input']}"  # the way alpaca records are turned into a user turn
    reference = next((item[k] for k in _ANSWER_KEYS if isinstance(item.get(k), str) and item[k].strip()), None)
    return user_prompt(question, system, reference)


def prompts_from_conversations(conversations, cap: int) -> list[Prompt]:
    """The first `cap` conversations as prompts: every turn before the last assistant answer, which
    becomes the reference."""
    out = []
    for conv in conversations:
        msgs = [{"role": m.role, "content": m.content} for m in conv.messages]
        last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
        if last is None or last == 0 or msgs[last - 1]["role"] != "user":
            continue  # nothing to ask, or an answer that follows a tool turn: not a plain question
        out.append(Prompt(msgs[:last], msgs[last - 1]["content"], msgs[last]["content"]))
        if len(out) >= cap:
            break
    return out
