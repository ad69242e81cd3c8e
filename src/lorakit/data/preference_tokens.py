"""Preference pairs -> tokens through the model's chat template, and their train/eval splits.

A pair tokenizes to {"prompt", "chosen", "rejected"} token lists: both completions follow the same
prompt tokens exactly, so a packed row can hold the prompt once (training/batching.pack, share_prefix).
The prompt is the render of the prompt turns with the generation prompt; each completion is what the
render of prompt + completion adds after the longest token prefix it shares with that prompt (the rule
of TRL's DPOTrainer, so both tokenize a pair identically).

Truncation (TRL's `keep_start`, its default): the prompt is kept whole and each completion is cut from
the right so that prompt + completion fits data.max_length; a pair whose prompt alone leaves no room for
a completion token is dropped and counted (`lorakit data inspect` shows the rule and the counts).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lorakit.atomic import atomic_dir, write_json
from lorakit.data.conversation import Conversation
from lorakit.data.preference import Preference, load_preferences
from lorakit.data.prepared import PreparedData, _check_weights, _paths, _plan, tokenizer_fingerprint
from lorakit.data.template import encode_with_offsets, render_messages, template_messages, uses_thinking
from lorakit.errors import LorakitError

TRUNCATION_RULE = (
    "prompt kept whole, each completion cut from the right to fit data.max_length (TRL's "
    "keep_start); a pair whose prompt fills data.max_length is dropped"
)
CACHE_VERSION = 1


def _ids(tokenizer, conv: Conversation, think: bool, generation_prompt: bool) -> list[int]:
    text = render_messages(tokenizer, template_messages(tokenizer, conv, think), think, generation_prompt, conv.source)
    return encode_with_offsets(tokenizer, text)[0]


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def tokenize_pair(tokenizer, pair: Preference, thinking: str = "off", max_length: int = 1024) -> dict | None:
    """{"prompt", "chosen", "rejected": token ids, "truncated": bool}, or None when the prompt alone fills
    max_length (the pair is dropped). Raises LorakitError when a side renders to no token of its own."""
    whole = Conversation(pair.prompt + pair.chosen, pair.source)
    think = uses_thinking(Conversation(pair.prompt + pair.chosen + pair.rejected), thinking)
    prompt = _ids(tokenizer, Conversation(pair.prompt, pair.source), think, generation_prompt=True)
    chosen = _ids(tokenizer, whole, think, generation_prompt=False)
    rejected = _ids(tokenizer, Conversation(pair.prompt + pair.rejected, pair.source), think, generation_prompt=False)
    n = min(common_prefix(prompt, chosen), common_prefix(prompt, rejected))
    out = {"prompt": prompt[:n], "chosen": chosen[n:], "rejected": rejected[n:]}
    for side in ("chosen", "rejected"):
        if not out[side]:
            raise LorakitError(f"{pair.source}: {side}: renders to no tokens after the prompt")
    if out["chosen"] == out["rejected"]:
        raise LorakitError(f"{pair.source}: chosen: equal to rejected once tokenized: the pair prefers nothing")
    room = max_length - n
    if room < 1:
        return None
    truncated = len(out["chosen"]) > room or len(out["rejected"]) > room
    out["chosen"], out["rejected"] = out["chosen"][:room], out["rejected"][:room]
    out["truncated"] = truncated
    return out


def pair_cache_key(cfg, tokenizer) -> str:
    from lorakit.data.prepared import _hash_files

    h = hashlib.sha256()
    h.update(f"lorakit-pairs-v{CACHE_VERSION}".encode())
    _hash_files(h, _paths(cfg))
    if cfg.eval_path:
        h.update(b"eval")
        _hash_files(h, [cfg.eval_path])
    settings = cfg.model_dump(mode="json")
    for name in ("path", "replay", "replay_prompts", "language", "persona_keywords"):
        settings.pop(name, None)
    settings["eval_path"] = bool(cfg.eval_path)
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(tokenizer_fingerprint(tokenizer).encode())
    return h.hexdigest()[:24]


def tokenize_each(items: list, tokenize, tokenizer, cfg) -> tuple[list[dict], int, int]:
    """`tokenize(tokenizer, item, thinking, max_length)` over items: (units, how many were truncated, how
    many were dropped because truncation left them no loss). Pairs and KTO's answers share it."""
    out, truncated, dropped = [], 0, 0
    for item in items:
        t = tokenize(tokenizer, item, cfg.thinking, cfg.max_length)
        if t is None:
            dropped += 1
            continue
        truncated += t.pop("truncated")
        out.append(t)
    return out, truncated, dropped


def read_unique(cfg, load, key) -> tuple[list, list[int], int]:
    """Every data.path read with `load(path, columns, system)`, exact duplicates (same `key(item)`) dropped
    when data.dedup: (items, items kept per path, duplicates dropped)."""
    seen: set[str] = set()
    items, counts, dropped = [], [], 0
    for path in _paths(cfg):
        part = []
        for item in load(path, cfg.columns or None, cfg.system):
            if cfg.dedup:
                k = key(item)
                if k in seen:
                    dropped += 1
                    continue
                seen.add(k)
            part.append(item)
        items += part
        counts.append(len(part))
    return items, counts, dropped


def _tokenized(pairs: list[Preference], tokenizer, cfg, stats: dict, prefix: str) -> list[dict]:
    out, truncated, dropped = tokenize_each(pairs, tokenize_pair, tokenizer, cfg)
    stats.update(
        {
            f"{prefix}_samples": len(out),
            f"{prefix}_truncated": truncated,
            f"{prefix}_dropped_no_loss": dropped,
            f"{prefix}_tokens": sum(len(u["prompt"]) * 2 + len(u["chosen"]) + len(u["rejected"]) for u in out),
            f"{prefix}_supervised_tokens": sum(len(u["chosen"]) + len(u["rejected"]) for u in out),
        }
    )
    return out


def prepare_pairs(cfg, tokenizer, cache_dir: Path | None = None) -> PreparedData:
    """As prepare_splits for preference pairs: read, deduplicate, split (data.eval_split / eval_path, seed,
    max_samples, weights), tokenize; cached by content like SFT data. train/eval hold pair dicts."""
    if cfg.format != "auto":
        raise LorakitError(
            f"data.format: {cfg.format} names an SFT schema; preference pairs are read in any of "
            "their forms with data.format auto"
        )
    if cfg.train_on != "all":
        raise LorakitError("data.train_on: a pair trains on its completions only; leave data.train_on all")
    key = pair_cache_key(cfg, tokenizer) if cache_dir is not None else None
    hit = Path(cache_dir) / key if key else None
    if hit is not None and (hit / "stats.json").is_file():
        stats = json.loads((hit / "stats.json").read_text())
        splits = json.loads((hit / "pairs.json").read_text())
        return PreparedData(splits["train"], splits["eval"], stats, hit)
    _check_weights(cfg)
    pairs, counts, dropped = read_unique(cfg, load_preferences, Preference.key)
    stats = {"records": len(pairs) + dropped, "duplicates_dropped": dropped, "truncation": TRUNCATION_RULE}
    train_at, eval_at = _plan(cfg, counts)
    evals = (
        load_preferences(cfg.eval_path, cfg.columns or None, cfg.system)
        if cfg.eval_path
        else [pairs[i] for i in eval_at]
    )
    data = PreparedData(
        _tokenized([pairs[i] for i in train_at], tokenizer, cfg, stats, "train"),
        _tokenized(evals, tokenizer, cfg, stats, "eval"),
        stats,
    )
    if not data.train:
        raise LorakitError(
            f"{cfg.path}: no training pairs left (every prompt fills max_length={cfg.max_length}); "
            "raise data.max_length"
        )
    stats["cache_key"] = key
    if hit is not None:
        with atomic_dir(hit, overwrite=True) as tmp:
            write_json(tmp / "pairs.json", {"train": data.train, "eval": data.eval})
            write_json(tmp / "stats.json", stats)
        data.cache_path = hit
    return data


def inspect_pairs(
    paths,
    tokenizer,
    columns: dict | None = None,
    system: str | None = None,
    thinking: str = "off",
    max_length: int = 1024,
) -> dict:
    """`lorakit data inspect` for a preference file: pair count, token lengths of prompt and completions,
    how many pairs the truncation rule cuts or drops, and the rule itself."""
    pairs = load_preferences(paths, columns, system)
    kept, cut = [], 0
    for p in pairs:
        t = tokenize_pair(tokenizer, p, thinking, max_length)
        if t is not None:
            cut += t["truncated"]
            kept.append(t)

    def stats(key):
        values = sorted(len(t[key]) for t in kept) or [0]
        return {"min": values[0], "mean": round(sum(values) / len(values), 1), "max": values[-1]}

    return {
        "pairs": len(pairs),
        "prompt": stats("prompt"),
        "chosen": stats("chosen"),
        "rejected": stats("rejected"),
        "truncated": cut,
        "dropped_prompt_fills_max_length": len(pairs) - len(kept),
        "max_length": max_length,
        "truncation": TRUNCATION_RULE,
    }


def inspect_lines(summary: dict) -> list[str]:
    s = summary
    lines = [f"preference pairs: {s['pairs']}"]
    for key in ("prompt", "chosen", "rejected"):
        lines.append(f"  {key} tokens: min {s[key]['min']}, mean {s[key]['mean']}, max {s[key]['max']}")
    lines.append(
        f"  truncated at max_length={s['max_length']}: {s['truncated']}; dropped (prompt fills it): "
        f"{s['dropped_prompt_fills_max_length']}"
    )
    lines.append(f"  truncation rule: {s['truncation']}")
    return lines
