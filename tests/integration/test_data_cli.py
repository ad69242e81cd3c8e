"""`lorakit data validate|inspect|prepare` run as a user runs them: a subprocess, checking output and exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "data"
LORAKIT = Path(sys.executable).parent / "lorakit"


def run(*args, cwd=None):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "120"}
    return subprocess.run(
        [str(LORAKIT), "data", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def no_traceback(p):
    assert "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr


pytestmark = pytest.mark.skipif(not LORAKIT.exists(), reason="lorakit entry point not installed")


def test_validate_good_and_bad():
    ok = run("validate", FIXTURES / "huanhuan.json", FIXTURES / "sharegpt.json")
    assert ok.returncode == 0, ok.stderr
    assert "6 records in 2 files: 6 good, 0 with problems" in ok.stdout

    bad = run("validate", FIXTURES / "bad.jsonl", "--max-errors", "2")
    no_traceback(bad)
    assert bad.returncode == 1
    lines = bad.stdout.splitlines()
    assert lines[0] == f"{FIXTURES / 'bad.jsonl'}:2: invalid JSON: Expecting value at column 40 (record cut short?)"
    assert lines[1] == f"{FIXTURES / 'bad.jsonl'}:3: instruction: empty (and no input)"
    assert lines[2] == "... and 8 more"


def test_validate_missing_path_is_one_line_error(tmp_path):
    p = run("validate", tmp_path / "nope.jsonl")
    no_traceback(p)
    assert p.returncode == 2
    assert p.stderr.strip() == f"error: {tmp_path / 'nope.jsonl'}: no such file or folder"


def test_inspect_with_plot_and_preview(tmp_path):
    png = tmp_path / "plots" / "lengths.png"
    p = run(
        "inspect",
        FIXTURES / "huanhuan.json",
        "--model",
        "qwen3-tiny-random",
        "--plot",
        png,
        "--max-length",
        "40",
        "--system",
        "甄嬛",
    )
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    assert "4 (4 good, 0 with problems)" in p.stdout
    assert "p95" in p.stdout and "would be cut" in p.stdout
    assert f"{FIXTURES / 'huanhuan.json'}:2" in p.stdout and "嘘——都说许愿说破是不灵的。<|im_end|>" in p.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    js = run("inspect", FIXTURES / "messages.jsonl", "--model", "smollm2-135m-instruct", "--json", "--thinking", "on")
    stats = json.loads(js.stdout)
    assert stats["records"] == 3 and stats["supervised_tokens"] > 0 and stats["truncated"] == 0


def test_prepare_exports_what_tokenize_conversation_gives_and_reuses_the_cache(tmp_path):
    from lorakit.data import load_conversations, tokenize_conversation
    from lorakit.models import load_tokenizer, resolve_model

    out, export = tmp_path / "prepared", tmp_path / "export.jsonl"
    args = (
        "prepare",
        FIXTURES / "huanhuan.json",
        "--model",
        "qwen3-tiny-random",
        "--system",
        "甄嬛",
        "--out",
        out,
        "--export-jsonl",
        export,
    )
    first = run(*args)
    no_traceback(first)
    assert first.returncode == 0, first.stderr
    assert "train: 4 samples" in first.stdout
    tok = load_tokenizer(resolve_model("qwen3-tiny-random"))
    want = [tokenize_conversation(tok, c) for c in load_conversations(str(FIXTURES / "huanhuan.json"), system="甄嬛")]
    rows = [json.loads(line) for line in export.read_text().splitlines()]
    assert rows == [{"input_ids": w["input_ids"], "labels": w["labels"]} for w in want]
    assert [p.name for p in out.iterdir()] == [first.stdout.split("prepared: ")[1].split()[0].rsplit("/", 1)[1]]
    again = run(*args)
    assert again.returncode == 0 and again.stdout == first.stdout


@pytest.mark.parametrize("content", [b'[{"instruction": "q", "output": "a"}, {"instr', bytes(range(256)) * 50])
def test_prepare_bad_data_leaves_nothing_behind(tmp_path, content):
    data = tmp_path / "d.json"
    data.write_bytes(content)
    out, export = tmp_path / "prepared", tmp_path / "export.jsonl"
    p = run("prepare", data, "--model", "qwen3-tiny-random", "--out", out, "--export-jsonl", export)
    no_traceback(p)
    assert p.returncode == 2
    assert p.stderr.startswith(f"error: {data}:") and len(p.stderr.strip().splitlines()) == 1
    assert not export.exists() and (not out.exists() or not any(out.iterdir()))


def test_prepare_bad_option_is_one_line_error(tmp_path):
    p = run(
        "prepare", FIXTURES / "huanhuan.json", "--model", "qwen3-tiny-random", "--thinking", "maybe", "--out", tmp_path
    )
    no_traceback(p)
    assert p.returncode == 2 and p.stderr.startswith("error: data.thinking")
