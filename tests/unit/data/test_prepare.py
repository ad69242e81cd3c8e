"""prepare_splits: splitting, dedup, mixing, caps, dropping unusable samples, and the content-hash cache."""

import json
import re
import time

import pytest

from lorakit.config import DataConfig
from lorakit.data import IGNORE, export_jsonl, load_conversations, prepare_splits, tokenize_conversation
from lorakit.data.prepared import account_line
from lorakit.errors import LorakitError


def write_alpaca(path, n, start=0, dup=0):
    rows = [{"instruction": f"question {i}", "input": "", "output": f"answer {i}"} for i in range(start, start + n)]
    rows += rows[:dup]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_huanhuan_prepared_like_tokenize_conversation(qwen3_tok, fixtures):
    cfg = DataConfig(path=str(fixtures / "huanhuan.json"), system="甄嬛")
    data = prepare_splits(cfg, qwen3_tok)
    convs = load_conversations(str(fixtures / "huanhuan.json"), system="甄嬛")
    want = [tokenize_conversation(qwen3_tok, c) for c in convs]
    assert [s["input_ids"] for s in data.train] == [w["input_ids"] for w in want]
    assert [s["labels"] for s in data.train] == [w["labels"] for w in want]
    assert data.eval == []
    st = data.stats
    assert st["records"] == 4 and st["train_samples"] == 4 and st["duplicates_dropped"] == 0
    assert st["train_tokens"] == sum(len(w["input_ids"]) for w in want)
    assert st["train_supervised_tokens"] == sum(sum(lab != IGNORE for lab in w["labels"]) for w in want)


def test_eval_split_share_and_count_dedup_and_max_samples(qwen3_tok, tmp_path):
    path = write_alpaca(tmp_path / "d.jsonl", 20, dup=3)
    data = prepare_splits(DataConfig(path=str(path), eval_split=0.25), qwen3_tok)
    assert data.stats["duplicates_dropped"] == 3
    assert (len(data.train), len(data.eval)) == (15, 5)
    train_ids = {tuple(s["input_ids"]) for s in data.train}
    assert not train_ids & {tuple(s["input_ids"]) for s in data.eval}
    assert len(prepare_splits(DataConfig(path=str(path), eval_split=3), qwen3_tok).eval) == 3
    assert len(prepare_splits(DataConfig(path=str(path), dedup=False), qwen3_tok).train) == 23
    capped = prepare_splits(DataConfig(path=str(path), eval_split=2, max_samples=4), qwen3_tok)
    assert (len(capped.train), len(capped.eval)) == (4, 2)


def test_split_is_seeded(qwen3_tok, tmp_path):
    path = write_alpaca(tmp_path / "d.jsonl", 30)
    a = prepare_splits(DataConfig(path=str(path), eval_split=5, seed=1), qwen3_tok)
    b = prepare_splits(DataConfig(path=str(path), eval_split=5, seed=1), qwen3_tok)
    c = prepare_splits(DataConfig(path=str(path), eval_split=5, seed=2), qwen3_tok)
    assert a.eval == b.eval and a.eval != c.eval


def test_eval_split_that_leaves_nothing_is_an_error(qwen3_tok, tmp_path):
    path = write_alpaca(tmp_path / "d.jsonl", 3)
    with pytest.raises(LorakitError, match="eval_split"):
        prepare_splits(DataConfig(path=str(path), eval_split=3), qwen3_tok)


def test_eval_path(qwen3_tok, tmp_path):
    train = write_alpaca(tmp_path / "t.jsonl", 6)
    held = write_alpaca(tmp_path / "e.jsonl", 2, start=100)
    data = prepare_splits(DataConfig(path=str(train), eval_path=str(held), eval_split=0.5), qwen3_tok)
    assert (len(data.train), len(data.eval)) == (6, 2)


def test_weighted_mixing(qwen3_tok, tmp_path):
    a = write_alpaca(tmp_path / "a.jsonl", 10)
    b = write_alpaca(tmp_path / "b.jsonl", 10, start=100)
    data = prepare_splits(DataConfig(path=[str(a), str(b)], weights=[3, 1]), qwen3_tok)
    numbers = [int(re.search(r"question (\d+)", qwen3_tok.decode(s["input_ids"])).group(1)) for s in data.train]
    assert len(numbers) == 20 and sum(n >= 100 for n in numbers) == 5
    with pytest.raises(LorakitError, match="weights"):
        prepare_splits(DataConfig(path=[str(a), str(b)], weights=[1]), qwen3_tok)


def test_samples_with_no_answer_left_after_truncation_are_dropped(qwen3_tok, tmp_path):
    rows = [{"instruction": "long " * 100, "output": "cut"}, {"instruction": "short", "output": "kept"}]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = prepare_splits(DataConfig(path=str(path), max_length=40), qwen3_tok)
    assert len(data.train) == 1
    assert data.stats["train_dropped_no_loss"] == 1 and data.stats["train_truncated"] == 1
    # the line `lorakit train` prints for it, and with data.dedup off, where nothing was checked
    assert account_line(data.stats, DataConfig(max_length=40)) == (
        "data: 2 records read, 0 exact duplicates dropped, 1 truncated at data.max_length=40 "
        "(1 of them dropped: no answer token left); 1 train / 0 eval samples"
    )
    assert account_line(data.stats, DataConfig(max_length=40, dedup=False)).startswith(
        "data: 2 records read, duplicates kept (data.dedup false), 1 truncated"
    )


def test_cache_hit_is_instant_and_invalidated_by_content_and_settings(qwen3_tok, tmp_path):
    path = write_alpaca(tmp_path / "d.jsonl", 50)
    cache = tmp_path / "cache"
    cfg = DataConfig(path=str(path), eval_split=5)
    first = prepare_splits(cfg, qwen3_tok, cache_dir=cache)
    assert first.cache_path is not None and first.cache_path.parent == cache
    t0 = time.perf_counter()
    again = prepare_splits(cfg, qwen3_tok, cache_dir=cache)
    assert time.perf_counter() - t0 < 1.0
    assert (again.train, again.eval, again.stats) == (first.train, first.eval, first.stats)
    changed = prepare_splits(DataConfig(path=str(path), eval_split=5, max_length=64), qwen3_tok, cache_dir=cache)
    write_alpaca(path, 50, start=1)
    edited = prepare_splits(cfg, qwen3_tok, cache_dir=cache)
    assert len({first.cache_path, changed.cache_path, edited.cache_path}) == 3
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp folders left behind


def test_export_jsonl(qwen3_tok, fixtures, tmp_path):
    data = prepare_splits(DataConfig(path=str(fixtures / "huanhuan.json")), qwen3_tok)
    out = tmp_path / "x.jsonl"
    export_jsonl(data.train, out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [set(r) for r in rows] == [{"input_ids", "labels"}] * 4
    assert rows == [{"input_ids": s["input_ids"], "labels": s["labels"]} for s in data.train]


def test_bad_data_stops_prepare_with_file_line(qwen3_tok, fixtures):
    with pytest.raises(LorakitError, match=r"bad.jsonl:2: invalid JSON"):
        prepare_splits(DataConfig(path=str(fixtures / "bad.jsonl")), qwen3_tok)


def test_prepared_samples_are_flat_arrays_with_progress(qwen3_tok, tmp_path, monkeypatch, capsys):
    """Issue 18: a big JSONL is streamed into int32 arrays (8 bytes a token, not ~72 as Python lists),
    a cache hit stays in arrays, and preparing shows a progress bar over the records."""
    import numpy as np

    from lorakit.data import load
    from lorakit.data.samples import Samples

    monkeypatch.setattr(load, "PROGRESS_DELAY", 0)  # the bar shows at once instead of after 2 s
    path = write_alpaca(tmp_path / "d.jsonl", 12, dup=2)
    cfg = DataConfig(path=str(path), eval_split=3)
    data = prepare_splits(cfg, qwen3_tok, cache_dir=tmp_path / "cache")
    assert "prepare: 100%|██████████| 14/14" in capsys.readouterr().err  # 12 records + 2 duplicates
    assert isinstance(data.train, Samples) and data.train.ids.dtype == np.int32
    assert data.train.ids.nbytes == 4 * (data.stats["train_tokens"] + data.stats["eval_tokens"])  # one copy, shared
    assert (len(data.train), len(data.eval)) == (9, 3)
    plain = prepare_splits(cfg, qwen3_tok)  # no cache
    assert data.train == plain.train and data.eval == plain.eval
    hit = prepare_splits(cfg, qwen3_tok, cache_dir=tmp_path / "cache")
    assert hit.cache_path == data.cache_path and isinstance(hit.train, Samples)
    assert hit.train == data.train and hit.eval == data.eval and hit.train[2:4] == list(data.train)[2:4]
