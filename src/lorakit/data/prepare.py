"""Turn a DataConfig into tokenized train/eval splits, cached by content hash so training reuses them."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lorakit.atomic import atomic_dir, write_json
from lorakit.data.conversation import Conversation
from lorakit.data.load import load_conversations
from lorakit.data.readers import resolve_paths
from lorakit.data.template import IGNORE, tokenize_conversation
from lorakit.errors import LorakitError

# Bump when tokenization or the cache layout changes, so old caches are not reused.
CACHE_VERSION = 1


@dataclass
class PreparedData:
    """Tokenized samples ({"input_ids", "labels"}) per split, plus counts describing what was done."""

    train: list[dict]
    eval: list[dict]
    stats: dict = field(default_factory=dict)
    cache_path: Path | None = None


def default_cache_dir() -> Path:
    """Where prepared data lives unless told otherwise: the model cache's `prepared/` (what `train` reads)."""
    from lorakit.models import cache_root

    return cache_root() / "prepared"


def _paths(cfg) -> list[str]:
    return [cfg.path] if isinstance(cfg.path, str) else list(cfg.path)


def data_config(**fields):
    """Build a DataConfig from keyword fields (CLI flags), turning validation errors into one-line LorakitErrors."""
    from pydantic import ValidationError

    from lorakit.config import DataConfig

    try:
        return DataConfig(**fields)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise LorakitError(f"data.{key}: {err['msg']} (got {err.get('input')!r})") from None


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything about the tokenizer that changes tokens: vocabulary, rules, template, specials."""
    cached = getattr(tokenizer, "_lorakit_fingerprint", None)
    if cached:
        return cached
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else repr(sorted(tokenizer.get_vocab().items())).encode())
    tpl = tokenizer.chat_template
    h.update(json.dumps(tpl, sort_keys=True).encode())
    h.update(json.dumps([tokenizer.eos_token, tokenizer.all_special_tokens], default=str).encode())
    digest = h.hexdigest()
    try:
        tokenizer._lorakit_fingerprint = digest
    except AttributeError:
        pass
    return digest


def _hash_files(h, paths: list[str]) -> None:
    for p in resolve_paths(paths):
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.name).encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)


def cache_key(cfg, tokenizer) -> str:
    """Hash of the data files' bytes, the tokenizer and every setting that changes the prepared samples."""
    h = hashlib.sha256()
    h.update(f"lorakit-data-v{CACHE_VERSION}".encode())
    _hash_files(h, _paths(cfg))
    if cfg.eval_path:
        h.update(b"eval")
        _hash_files(h, [cfg.eval_path])
    settings = cfg.model_dump(mode="json")
    settings.pop("path", None)
    settings["eval_path"] = bool(cfg.eval_path)  # the content is hashed above, not where it lives
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(tokenizer_fingerprint(tokenizer).encode())
    return h.hexdigest()[:24]


def _dedup(convs: list[Conversation], seen: set[str]) -> tuple[list[Conversation], int]:
    out = []
    for c in convs:
        k = c.key()
        if k not in seen:
            seen.add(k)
            out.append(c)
    return out, len(convs) - len(out)


def _eval_count(share: float, n: int) -> int:
    if share <= 0:
        return 0
    count = int(share) if share >= 1 else max(1, round(share * n))
    if count >= n:
        raise LorakitError(f"data.eval_split: {share} leaves no training data ({n} records after deduplication)")
    return count


def split_conversations(cfg) -> tuple[list[Conversation], list[Conversation], dict]:
    """Load, deduplicate, split, mix (with weights) and cap the conversations; tokenizer-free."""
    paths = _paths(cfg)
    if cfg.weights and len(cfg.weights) != len(paths):
        raise LorakitError(f"data.weights: {len(cfg.weights)} weights for {len(paths)} paths; give one per path")
    if any(w < 0 for w in cfg.weights) or (cfg.weights and sum(cfg.weights) <= 0):
        raise LorakitError("data.weights: weights must be >= 0 and not all zero")
    rng = random.Random(cfg.seed)
    seen: set[str] = set()
    stats = {"records": 0, "duplicates_dropped": 0}
    trains: list[list[Conversation]] = []
    evals: list[Conversation] = []
    for p in paths:
        convs = load_conversations(p, cfg.format, cfg.columns or None, cfg.system)
        stats["records"] += len(convs)
        if cfg.dedup:
            convs, dropped = _dedup(convs, seen)
            stats["duplicates_dropped"] += dropped
        n_eval = 0 if cfg.eval_path else _eval_count(cfg.eval_split, len(convs))
        # Hold out a random subset but keep input order in both parts (the trainer shuffles per epoch).
        held = set(rng.sample(range(len(convs)), n_eval)) if n_eval else set()
        trains.append([c for i, c in enumerate(convs) if i not in held])
        evals += [c for i, c in enumerate(convs) if i in held]
    if cfg.eval_path:
        evals = load_conversations(cfg.eval_path, cfg.format, cfg.columns or None, cfg.system)
        if cfg.dedup:
            evals, _ = _dedup(evals, set())
    if cfg.weights and len(trains) > 1:
        train = _mix(trains, cfg.weights, rng)
    else:
        train = [c for part in trains for c in part]
    if cfg.max_samples is not None:
        train = train[: cfg.max_samples]
    return train, evals, stats


def _mix(parts: list[list[Conversation]], weights: list[float], rng: random.Random) -> list[Conversation]:
    """Sample each source with replacement in proportion to its weight; the total size stays the same."""
    total = sum(len(p) for p in parts)
    wsum = sum(weights)
    out = []
    for part, w in zip(parts, weights):
        n = round(total * w / wsum)
        if n and part:
            out += rng.choices(part, k=n)
    rng.shuffle(out)
    return out


def _tokenize_all(tokenizer, convs: list[Conversation], cfg, stats: dict, prefix: str) -> list[dict]:
    out = []
    truncated = dropped = tokens = supervised = 0
    for c in convs:
        s = tokenize_conversation(tokenizer, c, thinking=cfg.thinking, train_on=cfg.train_on, max_length=cfg.max_length)
        n_sup = sum(1 for l in s["labels"] if l != IGNORE)
        truncated += s["truncated"]
        if n_sup == 0:
            dropped += 1  # truncation cut every answer token: nothing left to learn from
            continue
        tokens += len(s["input_ids"])
        supervised += n_sup
        out.append({"input_ids": s["input_ids"], "labels": s["labels"]})
    stats.update({f"{prefix}_samples": len(out), f"{prefix}_tokens": tokens,
                  f"{prefix}_supervised_tokens": supervised, f"{prefix}_truncated": truncated,
                  f"{prefix}_dropped_no_loss": dropped})
    return out


def prepare_splits(cfg, tokenizer, cache_dir: Path | None = None) -> PreparedData:
    """Load, split and tokenize the data described by `cfg` (a DataConfig).

    Honours path (str or list, with weights), format, columns, system, thinking, train_on, max_length,
    eval_split (share < 1 or count >= 1), eval_path, dedup, max_samples and seed. Samples whose every
    answer token was cut by truncation are dropped and counted. With `cache_dir`, the result is stored
    under a hash of the data files, tokenizer and settings, and a second call loads it instead.
    """
    key = cache_key(cfg, tokenizer) if cache_dir is not None else None
    if key is not None:
        hit = Path(cache_dir) / key
        if (hit / "stats.json").is_file():
            return load_prepared(hit)
    train_c, eval_c, stats = split_conversations(cfg)
    train = _tokenize_all(tokenizer, train_c, cfg, stats, "train")
    evals = _tokenize_all(tokenizer, eval_c, cfg, stats, "eval")
    if not train:
        raise LorakitError(f"{cfg.path}: no training samples left (all were cut by max_length={cfg.max_length} "
                           "before any answer token); raise data.max_length")
    stats["cache_key"] = key
    data = PreparedData(train, evals, stats)
    if key is not None:
        final = Path(cache_dir) / key
        try:
            with atomic_dir(final, overwrite=True) as tmp:
                save_prepared(data, tmp)
        except OSError as e:
            raise LorakitError(f"{final}: cannot write the prepared-data cache: {e.strerror or e}") from None
        data.cache_path = final
    return data


def save_prepared(data: PreparedData, folder: Path) -> None:
    """Write splits as flat int32 arrays plus offsets (fast to load) and stats.json (written last)."""
    for name, samples in (("train", data.train), ("eval", data.eval)):
        lengths = np.array([len(s["input_ids"]) for s in samples], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ids = np.array([t for s in samples for t in s["input_ids"]], dtype=np.int32)
        labels = np.array([t for s in samples for t in s["labels"]], dtype=np.int32)
        np.save(folder / f"{name}_input_ids.npy", ids)
        np.save(folder / f"{name}_labels.npy", labels)
        np.save(folder / f"{name}_offsets.npy", offsets)
    write_json(folder / "stats.json", data.stats)


def load_prepared(folder: Path) -> PreparedData:
    """Read a folder written by save_prepared."""
    folder = Path(folder)
    splits = {}
    for name in ("train", "eval"):
        ids = np.load(folder / f"{name}_input_ids.npy")
        labels = np.load(folder / f"{name}_labels.npy")
        offsets = np.load(folder / f"{name}_offsets.npy")
        splits[name] = [{"input_ids": ids[a:b].tolist(), "labels": labels[a:b].tolist()}
                        for a, b in zip(offsets[:-1], offsets[1:])]
    stats = json.loads((folder / "stats.json").read_text(encoding="utf-8"))
    return PreparedData(splits["train"], splits["eval"], stats, folder)


def export_jsonl(samples: list[dict], path: str | Path) -> None:
    """One JSON object per sample with keys input_ids and labels (-100 where no loss), in order."""
    from lorakit.atomic import write_text

    write_text(path, "".join(json.dumps({"input_ids": s["input_ids"], "labels": s["labels"]}) + "\n" for s in samples))


def summary_lines(data: PreparedData) -> list[str]:
    """A few human lines about a prepared dataset (printed by `lorakit data prepare`)."""
    st = data.stats
    lines = [f"records: {st['records']} ({st['duplicates_dropped']} duplicates dropped)"]
    for split in ("train", "eval"):
        if st.get(f"{split}_samples") or split == "train":
            lines.append(f"{split}: {st[f'{split}_samples']} samples, {st[f'{split}_tokens']} tokens "
                         f"({st[f'{split}_supervised_tokens']} with loss), {st[f'{split}_truncated']} truncated, "
                         f"{st[f'{split}_dropped_no_loss']} dropped (no answer left after truncation)")
    if data.cache_path is not None:
        lines.append(f"prepared: {data.cache_path}")
    return lines
