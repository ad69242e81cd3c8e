"""Prompt records for GRPO: a prompt to sample completions from, plus any other columns (a reference
`answer`, say), which go to the reward functions untouched.

A record holds `prompt` as chat messages (TRL's conversational form) or as a string (one user turn;
`data.system` adds a system turn), or `messages` whose trailing assistant turn, if any, is dropped
(a chat dataset reused as prompts). `data.columns` renames source columns first, as for SFT.
"""

from __future__ import annotations

from lorakit.data.conversation import ROLES, Problem
from lorakit.data.formats import normalise_columns, rename
from lorakit.data.readers import iter_records, resolve_paths
from lorakit.errors import LorakitError


def load_prompt_records(paths, columns: dict[str, str] | None = None, system: str | None = None) -> list[dict]:
    """Every record of `paths` as {"prompt": [messages], **other columns}; the first bad record raises a
    one-line LorakitError naming file:line."""
    columns = normalise_columns(columns)
    out = []
    for path in resolve_paths(paths):
        for item in iter_records(path):
            if isinstance(item, Problem):
                raise LorakitError(f"{item.source}: {item.field + ': ' if item.field else ''}{item.message}")
            source, record = item
            out.append(prompt_record(rename(record, columns), source, system))
    if not out:
        raise LorakitError(f"data.path: no prompt records in {paths}")
    return out


def prompt_record(record: dict, source: str, system: str | None = None) -> dict:
    """One raw record -> {"prompt": messages, **the other columns}."""
    extra = {k: v for k, v in record.items() if k not in ("prompt", "messages")}
    if "prompt" in record:
        prompt = record["prompt"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
    elif "messages" in record:
        prompt = list(record["messages"]) if isinstance(record["messages"], list) else record["messages"]
        while (
            isinstance(prompt, list)
            and prompt
            and isinstance(prompt[-1], dict)
            and prompt[-1].get("role") == "assistant"
        ):
            prompt = prompt[:-1]
    else:
        raise LorakitError(
            f"{source}: a GRPO record needs a `prompt` (text or messages) or `messages` column; "
            f"it has {', '.join(sorted(record)) or 'none'} (rename with data.columns)"
        )
    if not isinstance(prompt, list) or not prompt or not all(_is_message(m) for m in prompt):
        raise LorakitError(f"{source}: prompt: expected text or a list of {{role, content}} messages")
    if prompt[-1]["role"] == "assistant":
        raise LorakitError(f"{source}: prompt: ends with an assistant turn; nothing left to generate")
    if system and prompt[0]["role"] != "system":
        prompt = [{"role": "system", "content": system}] + prompt
    return {"prompt": [{"role": m["role"], "content": m["content"]} for m in prompt], **extra}


def _is_message(m) -> bool:
    return isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
