"""inspect's statistics, preview pieces and histogram."""

import json

from rich.console import Console

from lorakit.data import load_conversations, tokenize_conversation
from lorakit.data.stats import inspect_data, plot_lengths, render_report


def test_counts_lengths_truncation_and_duplicates(qwen3_tok, fixtures, tmp_path):
    path = tmp_path / "d.jsonl"
    rows = json.loads((fixtures / "huanhuan.json").read_text(encoding="utf-8"))
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows + rows[:1]) + "{bad\n", encoding="utf-8"
    )
    want = [
        len(tokenize_conversation(qwen3_tok, c, max_length=10**6)["input_ids"])
        for c in load_conversations(str(fixtures / "huanhuan.json"))
    ]
    res = inspect_data(str(path), qwen3_tok, max_length=40, preview=0)
    s = res.summary()
    assert res.lengths == want + want[:1]
    assert (s["records"], s["good"], s["with_problems"], s["duplicates"]) == (6, 5, 1, 1)
    assert s["length"]["max"] == max(want) and s["length"]["min"] == min(want)
    over = [n - 40 for n in res.lengths if n > 40]
    assert s["truncated"] == len(over) and s["truncated_tokens"] == {"total": sum(over), "max": max(over)}


def test_preview_marks_exactly_the_answer(qwen3_tok, fixtures):
    res = inspect_data(str(fixtures / "huanhuan.json"), qwen3_tok, preview=1, system="甄嬛")
    source, pieces = res.previews[0]
    assert source.endswith("huanhuan.json:2")
    assert "".join(p for p, _ in pieces).startswith("<|im_start|>system\n甄嬛<|im_end|>")
    assert "".join(p for p, trained in pieces if trained) == "嘘——都说许愿说破是不灵的。<|im_end|>"
    console = Console(record=True, width=100)
    render_report(res, console)
    out = console.export_text()
    assert "4 (4 good, 0 with problems)" in out and "嘘——都说许愿说破是不灵的。" in out


def test_histogram_png(qwen3_tok, fixtures, tmp_path):
    res = inspect_data(str(fixtures / "alpaca.jsonl"), qwen3_tok, max_length=20, preview=0)
    plot_lengths(res, tmp_path / "sub" / "h.png")
    assert (tmp_path / "sub" / "h.png").read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["h.png"]
