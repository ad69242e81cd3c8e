"""Turn a DataConfig into tokenized train/eval splits, cached by content hash so training reuses them."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from lorakit.atomic import atomic_dir, write_json
from lorakit.data.conversation import Conversation
from lorakit.data.load import iter_loaded_conversations, load_conversations, progress
from lorakit.data.readers import resolve_paths
from lorakit.data.samples import SampleBuilder, Samples
from lorakit.data.template import tokenize_conversation
from lorakit.errors import LorakitError

# Bump when tokenization or the cache layout changes, so old caches are not reused.
CACHE_VERSION = 2  # 2: records with tools render their tool list and calls


@dataclass
class PreparedData:
    """Tokenized samples ({"input_ids", "labels"}) per split, plus counts describing what was done.

    `train` and `eval` are `Samples`: read-only sequences of those dicts, stored as flat arrays."""

    train: Samples
    eval: Samples
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
    for name in ("replay", "replay_prompts", "language", "persona_keywords"):
        settings.pop(name, None)  # added after preparing (replay) or read only by eval: same samples
    settings["eval_path"] = bool(cfg.eval_path)  # the content is hashed above, not where it lives
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(tokenizer_fingerprint(tokenizer).encode())
    return h.hexdigest()[:24]


def _digest(c: Conversation) -> bytes:
    # 32 bytes per record instead of the whole text: dedup of a big file must not hold a second copy
    return hashlib.sha256(c.key().encode("utf-8")).digest()


def _unique(convs: Iterable[Conversation], seen: set[bytes] | None, dropped: list[int]) -> Iterator[Conversation]:
    """`convs` without exact duplicates (of each other and of `seen`); counts the drops in dropped[0]."""
    for c in convs:
        if seen is not None:
            k = _digest(c)
            if k in seen:
                dropped[0] += 1
                continue
            seen.add(k)
        yield c


def _eval_count(share: float, n: int) -> int:
    if share <= 0:
        return 0
    count = int(share) if share >= 1 else max(1, round(share * n))
    if count >= n:
        raise LorakitError(f"data.eval_split: {share} leaves no training data ({n} records after deduplication)")
    return count


def _check_weights(cfg) -> None:
    paths = _paths(cfg)
    if cfg.weights and len(cfg.weights) != len(paths):
        raise LorakitError(f"data.weights: {len(cfg.weights)} weights for {len(paths)} paths; give one per path")
    if any(w < 0 for w in cfg.weights) or (cfg.weights and sum(cfg.weights) <= 0):
        raise LorakitError("data.weights: weights must be >= 0 and not all zero")


def _plan(cfg, counts: list[int]) -> tuple[list[int], list[int]]:
    """Which records (numbered across all paths, after dedup) train and which are held out.

    Depends only on the per-path counts and the seed, so the loader of conversations (eval) and the
    streaming tokenizer (prepare) make the same split.
    """
    rng = random.Random(cfg.seed)
    parts: list[list[int]] = []
    evals: list[int] = []
    start = 0
    for n in counts:
        n_eval = 0 if cfg.eval_path else _eval_count(cfg.eval_split, n)
        # Hold out a random subset but keep input order in both parts (the trainer shuffles per epoch).
        held = set(rng.sample(range(n), n_eval)) if n_eval else set()
        parts.append([start + i for i in range(n) if i not in held])
        evals += [start + i for i in sorted(held)]
        start += n
    train = _mix(parts, cfg.weights, rng) if cfg.weights and len(parts) > 1 else [i for part in parts for i in part]
    if cfg.max_samples is not None:
        train = train[: cfg.max_samples]
    return train, evals


def split_conversations(cfg) -> tuple[list[Conversation], list[Conversation], dict]:
    """Load, deduplicate, split, mix (with weights) and cap the conversations; tokenizer-free."""
    _check_weights(cfg)
    seen: set[bytes] | None = set() if cfg.dedup else None
    dropped = [0]
    convs, counts = [], []
    for p in _paths(cfg):
        part = list(_unique(load_conversations(p, cfg.format, cfg.columns or None, cfg.system), seen, dropped))
        convs += part
        counts.append(len(part))
    stats = {"records": len(convs) + dropped[0], "duplicates_dropped": dropped[0]}
    train, held = _plan(cfg, counts)
    evals = [convs[i] for i in held]
    if cfg.eval_path:
        loaded = load_conversations(cfg.eval_path, cfg.format, cfg.columns or None, cfg.system)
        evals = list(_unique(loaded, set() if cfg.dedup else None, [0]))
    return [convs[i] for i in train], evals, stats


def _mix(parts: list[list], weights: list[float], rng: random.Random) -> list:
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


def _tokenize_into(builder: SampleBuilder, convs: Iterable[Conversation], tokenizer, cfg) -> int:
    """Tokenize conversations as they stream in; returns how many were added."""
    n = 0
    for c in convs:
        builder.add(
            tokenize_conversation(tokenizer, c, thinking=cfg.thinking, train_on=cfg.train_on, max_length=cfg.max_length)
        )
        n += 1
    return n


def _counted(convs: Iterable[Conversation], bar) -> Iterator[Conversation]:
    for c in convs:
        bar.update(1)
        yield c


def _usable(samples: Samples, positions: list[int], stats: dict, prefix: str) -> Samples:
    """The chosen samples minus those truncation left without an answer token, with their counts."""
    chosen = samples.take(positions)
    keep = np.flatnonzero(samples.supervised[chosen.order] > 0) if len(chosen) else np.zeros(0, np.int64)
    out = chosen.take(keep)
    stats.update(
        {
            f"{prefix}_samples": len(out),
            f"{prefix}_tokens": out.token_count(),
            f"{prefix}_supervised_tokens": int(samples.supervised[out.order].sum()),
            f"{prefix}_truncated": int(samples.truncated[chosen.order].sum()),
            f"{prefix}_dropped_no_loss": len(chosen) - len(out),
        }
    )
    return out


def _stream_splits(cfg, tokenizer) -> PreparedData:
    """Read, deduplicate and tokenize record by record into flat arrays, then split by index."""
    _check_weights(cfg)
    paths = _paths(cfg)
    seen: set[bytes] | None = set() if cfg.dedup else None
    dropped = [0]
    builder, counts = SampleBuilder(), []
    with progress(paths + ([cfg.eval_path] if cfg.eval_path else []), "prepare") as bar:
        for p in paths:
            convs = _counted(iter_loaded_conversations(p, cfg.format, cfg.columns or None, cfg.system), bar)
            counts.append(_tokenize_into(builder, _unique(convs, seen, dropped), tokenizer, cfg))
        eval_builder = SampleBuilder()
        if cfg.eval_path:
            convs = _counted(iter_loaded_conversations(cfg.eval_path, cfg.format, cfg.columns or None, cfg.system), bar)
            _tokenize_into(eval_builder, _unique(convs, set() if cfg.dedup else None, [0]), tokenizer, cfg)
    stats = {"records": sum(counts) + dropped[0], "duplicates_dropped": dropped[0]}
    train_at, eval_at = _plan(cfg, counts)
    everything = builder.build()
    train = _usable(everything, train_at, stats, "train")
    if cfg.eval_path:
        held = eval_builder.build()
        evals = _usable(held, list(range(len(held))), stats, "eval")
    else:
        evals = _usable(everything, eval_at, stats, "eval")
    return PreparedData(train, evals, stats)


def prepare_splits(cfg, tokenizer, cache_dir: Path | None = None) -> PreparedData:
    """Load, split and tokenize the data described by `cfg` (a DataConfig).

    Honours path (str or list, with weights), format, columns, system, thinking, train_on, max_length,
    eval_split (share < 1 or count >= 1), eval_path, dedup, max_samples and seed. Samples whose every
    answer token was cut by truncation are dropped and counted. With `cache_dir`, the result is stored
    under a hash of the data files, tokenizer and settings, and a second call loads it instead.
    Records stream from disk into flat int32 arrays (`Samples`), so memory follows the token count.
    """
    key = cache_key(cfg, tokenizer) if cache_dir is not None else None
    if key is not None:
        hit = Path(cache_dir) / key
        if (hit / "stats.json").is_file():
            return load_prepared(hit)
    data = _stream_splits(cfg, tokenizer)
    if not data.train:
        raise LorakitError(
            f"{cfg.path}: no training samples left (all were cut by max_length={cfg.max_length} "
            "before any answer token); raise data.max_length"
        )
    data.stats["cache_key"] = key
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
        _as_samples(samples).save(folder, name)
    write_json(folder / "stats.json", data.stats)


def _as_samples(samples) -> Samples:
    if isinstance(samples, Samples):
        return samples
    builder = SampleBuilder()
    for s in samples:
        builder.add(s)
    return builder.build()


def load_prepared(folder: Path) -> PreparedData:
    """Read a folder written by save_prepared (the arrays stay flat: no per-token Python objects)."""
    folder = Path(folder)
    stats = json.loads((folder / "stats.json").read_text(encoding="utf-8"))
    return PreparedData(Samples.load(folder, "train"), Samples.load(folder, "eval"), stats, folder)


def export_jsonl(samples: list[dict], path: str | Path) -> None:
    """One JSON object per sample with keys input_ids and labels (-100 where no loss), in order."""
    from lorakit.atomic import write_text

    write_text(path, "".join(json.dumps({"input_ids": s["input_ids"], "labels": s["labels"]}) + "\n" for s in samples))


def account_line(stats: dict, cfg) -> str:
    """What the data stage (`cfg`: the DataConfig) kept and dropped, in one line, printed by `lorakit train`:
    a tutorial's reader counts the records of the file, so the line starts from them."""
    truncated = stats.get("train_truncated", 0) + stats.get("eval_truncated", 0)
    no_loss = stats.get("train_dropped_no_loss", 0) + stats.get("eval_dropped_no_loss", 0)
    duplicates = (
        f"{stats['duplicates_dropped']} exact duplicates dropped" if cfg.dedup else "duplicates kept (data.dedup false)"
    )
    cut = f"{truncated} truncated at data.max_length={cfg.max_length}"
    if no_loss:
        cut += f" ({no_loss} of them dropped: no answer token left)"
    return (
        f"data: {stats['records']} records read, {duplicates}, {cut}; "
        f"{stats.get('train_samples', 0)} train / {stats.get('eval_samples', 0)} eval samples"
    )


def summary_lines(data: PreparedData) -> list[str]:
    """A few human lines about a prepared dataset (printed by `lorakit data prepare`)."""
    st = data.stats
    lines = [f"records: {st['records']} ({st['duplicates_dropped']} duplicates dropped)"]
    for split in ("train", "eval"):
        if st.get(f"{split}_samples") or split == "train":
            lines.append(
                f"{split}: {st[f'{split}_samples']} samples, {st[f'{split}_tokens']} tokens "
                f"({st[f'{split}_supervised_tokens']} with loss), {st[f'{split}_truncated']} truncated, "
                f"{st[f'{split}_dropped_no_loss']} dropped (no answer left after truncation)"
            )
    if data.cache_path is not None:
        lines.append(f"prepared: {data.cache_path}")
    return lines
