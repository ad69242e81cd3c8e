"""`lorakit eval` of a run trained on tool conversations: the tool-call scores reach eval.json, the terminal
and report.html. A real 2-step run of qwen3-tiny-random (its template renders tools in the Hermes form)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from lorakit.data.example_tools import TOOLS
from lorakit.eval.tool_calls import judge_answer
from lorakit.serve.tool_calls import hermes

LORAKIT = str(Path(sys.executable).parent / "lorakit")
ASSETS = Path(__file__).resolve().parents[2] / "src" / "lorakit" / "assets" / "tools"


def _cli(*args, timeout=600) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([LORAKIT, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def test_eval_scores_tool_calls_of_base_and_tuned(tmp_path):
    train = (ASSETS / "train.jsonl").read_text().splitlines()[:6]
    every = [json.loads(line) for line in (ASSETS / "test.jsonl").read_text().splitlines()]
    held = [next(r for r in every if r["kind"] == k) for k in ("single", "no_tool", "parallel")]
    (tmp_path / "train.jsonl").write_text("\n".join(train) + "\n")
    (tmp_path / "held.jsonl").write_text("\n".join(json.dumps(r) for r in held) + "\n")
    (tmp_path / "run.yaml").write_text(
        f"model:\n  name: qwen3-tiny-random\ndata:\n  path: {tmp_path / 'train.jsonl'}\n"
        f"  eval_path: {tmp_path / 'held.jsonl'}\n  max_length: 1024\n"
        f"train:\n  output_dir: {tmp_path / 'run'}\n  max_steps: 2\n  batch_size: 3\n  grad_accum: 1\n"
        "  lr: 1.0e-3\n  logging_steps: 1\n  save_steps: 2\n"
    )
    done = _cli("train", tmp_path / "run.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    done = _cli("eval", tmp_path / "run", "--max-new-tokens", 6, "--max-prompts", 1)
    assert done.returncode == 0, done.stderr[-3000:]

    result = json.loads((tmp_path / "run" / "eval.json").read_text())
    calls = result["tool_calls"]
    turns = [m for r in held for m in r["messages"] if m["role"] == "assistant"]
    assert calls["turns"] == len(turns) and calls["parser"] == "hermes"
    assert calls["call_turns"] == sum(bool(m.get("tool_calls")) for m in turns)
    for side in ("base", "finetuned"):
        s = calls[side]
        assert s["name_accuracy"] == s["name_right"] / calls["call_turns"]
        assert s["no_call_accuracy"] == s["no_call_right"] / calls["answer_turns"]
    assert len(calls["examples"]) == len(turns)  # fewer turns than the shown maximum: all of them
    expected = [m.get("tool_calls") or [] for m in turns]
    for e, want in zip(calls["examples"], expected):  # each stored answer has the verdict it was scored with
        from lorakit.data.conversation import ToolCall

        want = [ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in want]
        for side in ("base", "finetuned"):
            assert judge_answer(hermes.parse(e[side]["text"]), want, TOOLS).right == e[side]["right"]
    out = done.stdout.replace("\n", "")
    assert "tool calls, function name right" in out and "none where none is due" in out
    page = (tmp_path / "run" / "report.html").read_text()
    assert "<h2>Tool calls</h2>" in page and "&lt;tool_call&gt;" in page  # the expected calls, escaped
