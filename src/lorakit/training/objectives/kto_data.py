"""KTO's data: unpaired answers ({"prompt", "completion", "label"} token lists) and their splits.

Records are read by lorakit.data.preference (the unpaired form, or pairs, unpaired as TRL does: the
chosen answer desirable, the rejected one undesirable) and tokenized with the rule the pairs use
(lorakit.data.preference_tokens): the prompt is the template's render of the prompt turns with the
generation prompt, the completion what the render of prompt + answer adds after their common prefix;
the prompt is kept whole and the completion cut to fit data.max_length; an answer whose prompt fills
max_length is dropped and counted.
"""

from __future__ import annotations

import json

from lorakit.data.conversation import Conversation
from lorakit.data.preference import Unpaired, load_preferences, record_kind
from lorakit.data.preference_tokens import _ids, common_prefix, pair_cache_key, read_unique, tokenize_each
from lorakit.data.prepared import PreparedData, _check_weights, _plan
from lorakit.data.readers import iter_records
from lorakit.data.template import uses_thinking
from lorakit.errors import LorakitError


def tokenize_unpaired(tokenizer, item: Unpaired, thinking: str = "off", max_length: int = 1024) -> dict | None:
    """{"prompt", "completion", "label", "truncated"}, or None when the prompt alone fills max_length."""
    think = uses_thinking(Conversation(item.prompt + item.completion), thinking)
    prompt = _ids(tokenizer, Conversation(item.prompt, item.source), think, generation_prompt=True)
    whole = _ids(tokenizer, Conversation(item.prompt + item.completion, item.source), think, generation_prompt=False)
    n = common_prefix(prompt, whole)
    completion = whole[n:]
    if not completion:
        raise LorakitError(f"{item.source}: completion: renders to no tokens after the prompt")
    room = max_length - n
    if room < 1:
        return None
    return {
        "prompt": prompt[:n],
        "completion": completion[:room],
        "label": item.label,
        "truncated": len(completion) > room,
    }


def _form(paths) -> str:
    """ "unpaired" or "pair": the form of the first record (a file holds one form)."""
    for item in iter_records(_first(paths)):
        if isinstance(item, tuple):
            return record_kind(item[1]) or "unpaired"
    return "unpaired"


def _first(paths):
    from lorakit.data.readers import resolve_paths

    return resolve_paths(paths)[0]


def load_unpaired(paths, columns, system) -> list[Unpaired]:
    if _form(paths) == "pair":  # TRL's unpairing: every chosen answer desirable, every rejected one not
        pairs = load_preferences(paths, columns, system, kind="pair")
        return [Unpaired(p.prompt, p.chosen, True, p.source) for p in pairs] + [
            Unpaired(p.prompt, p.rejected, False, p.source) for p in pairs
        ]
    return load_preferences(paths, columns, system, kind="unpaired")


def _tokenized(items: list[Unpaired], tokenizer, cfg, stats: dict, prefix: str) -> list[dict]:
    out, truncated, dropped = tokenize_each(items, tokenize_unpaired, tokenizer, cfg)
    stats.update(
        {
            f"{prefix}_samples": len(out),
            f"{prefix}_truncated": truncated,
            f"{prefix}_dropped_no_loss": dropped,
            f"{prefix}_desirable": sum(u["label"] for u in out),
            f"{prefix}_tokens": sum(len(u["prompt"]) + len(u["completion"]) for u in out),
            f"{prefix}_supervised_tokens": sum(len(u["completion"]) for u in out),
        }
    )
    return out


def _key(u: Unpaired) -> str:
    """Equal for exact duplicate answers (same prompt, completion and label)."""
    return json.dumps([[m.role, m.content] for m in u.prompt + u.completion] + [u.label])


def prepare_unpaired(cfg, tokenizer) -> PreparedData:
    """Read, deduplicate, split (data.eval_split / eval_path, seed, max_samples) and tokenize."""
    _check_weights(cfg)
    items, counts, dropped = read_unique(cfg, load_unpaired, _key)
    stats = {"records": len(items) + dropped, "duplicates_dropped": dropped}
    train_at, eval_at = _plan(cfg, counts)
    evals = (
        load_unpaired(cfg.eval_path, cfg.columns or None, cfg.system) if cfg.eval_path else [items[i] for i in eval_at]
    )
    data = PreparedData(
        _tokenized([items[i] for i in train_at], tokenizer, cfg, stats, "train"),
        _tokenized(evals, tokenizer, cfg, stats, "eval"),
        stats,
    )
    if not data.train:
        raise LorakitError(
            f"{cfg.path}: no training answers left (every prompt fills max_length={cfg.max_length}); "
            "raise data.max_length"
        )
    # the data's identity (files, settings, tokenizer): resume refuses a run whose data changed
    stats["cache_key"] = pair_cache_key(cfg, tokenizer)
    labels = {u["label"] for u in data.train}
    if len(labels) < 2:
        kind = "desirable" if labels == {True} else "undesirable"
        raise LorakitError(f"{cfg.path}: every answer is {kind} (label); KTO needs both kinds")
    return data
