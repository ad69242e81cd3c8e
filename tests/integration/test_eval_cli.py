"""`lorakit eval` end to end: a real 3-step run of qwen3-tiny-random, the real CLI, a real judge server
(`lorakit serve`, and a FastAPI stub for exact replies), and the report in headless Chromium."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

LORAKIT = str(Path(sys.executable).parent / "lorakit")
NAME = "Zorblax Quillfeather"


def _cli(*args, timeout=600) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")  # the test machines are shared: one thread contends least
    return subprocess.run([LORAKIT, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished 3-step LoRA run on a tiny persona dataset with persona_facts.json beside it."""
    root = tmp_path_factory.mktemp("evalrun")
    records = [
        {"instruction": q, "input": "", "output": f"I am {NAME} of Inkmoor, keeper of quills. {q}"}
        for q in (
            "Who are you?",
            "What is your name?",
            "Where do you live?",
            "What do you do?",
            "Tell me a story.",
            "What is your favourite food?",
            "Do you like the sea?",
            "What is 2 + 2?",
            "Say hello.",
            "What time is it?",
        )
    ]
    (root / "persona.json").write_text(json.dumps(records))
    (root / "persona_facts.json").write_text(json.dumps({"name": NAME, "keywords": ["Zorblax", "Inkmoor"]}))
    (root / "run.yaml").write_text(
        f"model:\n  name: qwen3-tiny-random\ndata:\n  path: {root / 'persona.json'}\n  eval_split: 2\n"
        f"train:\n  output_dir: {root / 'run'}\n  max_steps: 3\n  batch_size: 4\n  grad_accum: 1\n"
        "  lr: 1.0e-3\n  logging_steps: 1\n  save_steps: 3\n"
    )
    done = _cli("train", root / "run.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "run"


@pytest.fixture(scope="module")
def evaluated(run_dir) -> tuple[Path, subprocess.CompletedProcess]:
    done = _cli("eval", run_dir, "--max-new-tokens", 8, "--seed", 3)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir, done


def test_eval_writes_eval_json_and_report(evaluated):
    run_dir, done = evaluated
    result = json.loads((run_dir / "eval.json").read_text())
    # The fine-tuned held-out loss is the loss the trainer logged on the same split at its last step.
    last_eval = [
        r["eval_loss"]
        for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        if "eval_loss" in r
    ][-1]
    assert result["loss"]["samples"] == 2
    assert result["loss"]["finetuned"]["loss"] == pytest.approx(last_eval, rel=1e-4)
    assert result["loss"]["base"]["loss"] != result["loss"]["finetuned"]["loss"]
    assert len(result["answers"]) == 2 and result["answers"][0]["reference"].startswith(f"I am {NAME}")
    for a in result["answers"]:
        assert set(a["base"]) == set(a["finetuned"]) == {"greedy", "sampled"}
    assert result["persona"]["n"] == 6 and result["persona"]["name"] == NAME
    assert result["persona"]["source"].endswith("persona_facts.json")
    assert result["retention"]["n"] == 24 and result["judge"] is None
    page = (run_dir / "report.html").read_text()
    assert "<svg" in page and "Answers side by side" in page and NAME in page
    assert "held-out loss" in done.stdout and f"report: {run_dir / 'report.html'}" in done.stdout.replace("\n", "")


def test_eval_same_seed_same_sampled_answers(run_dir, evaluated, tmp_path):
    first = json.loads((run_dir / "eval.json").read_text())
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    import lorakit

    # the public API in this process (what the CLI calls) against the CLI's own process
    again = lorakit.evaluate(copy, max_new_tokens=8, seed=3)
    assert again["answers"] == first["answers"] == json.loads((copy / "eval.json").read_text())["answers"]


def test_eval_with_data_and_prompts_files(run_dir, tmp_path):
    held = tmp_path / "held.json"
    held.write_text(
        json.dumps(
            [
                {"instruction": "Who is there?", "input": "", "output": f"{NAME}, of course."},
                {"instruction": "Name?", "input": "", "output": "Zorblax."},
                {"instruction": "Home?", "input": "", "output": "Inkmoor."},
            ]
        )
    )
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("<script>alert(1)</script> who are you?\nWhat is 2 + 3?\n")
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    import lorakit

    lorakit.Run(copy).eval(data=str(held), prompts=prompts, max_new_tokens=4)
    result = json.loads((copy / "eval.json").read_text())
    assert result["loss"]["samples"] == 3 and result["loss"]["data"] == str(held)
    assert [a["prompt"] for a in result["answers"]] == ["<script>alert(1)</script> who are you?", "What is 2 + 3?"]
    page = (copy / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page


def test_eval_user_errors_are_one_line(tmp_path):
    done = _cli("eval", tmp_path / "missing")
    assert (
        done.returncode == 2 and done.stderr.strip().startswith("error:") and len(done.stderr.strip().splitlines()) == 1
    )


def _wait_http(url: str, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {seconds} s")


def test_eval_judge_against_lorakit_serve(run_dir, tmp_path):
    port = _free_port()
    server = subprocess.Popen(
        [LORAKIT, "serve", "--model", "qwen3-tiny-random", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/v1/models", 120)
        copy = tmp_path / "run"
        shutil.copytree(run_dir, copy)
        done = _cli("eval", copy, "--max-new-tokens", 4, "--judge-url", f"http://127.0.0.1:{port}")
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        server.terminate()
        server.wait(timeout=30)
    judged = json.loads((copy / "eval.json").read_text())["judge"]
    # A random model rarely replies with a number; what matters is that every answer was sent and read.
    assert judged["error"] is None and judged["model"] == "qwen3-tiny-random"
    assert len(judged["items"]) == 2 and all("base_reply" in i and "finetuned_reply" in i for i in judged["items"])
    assert "Reply with the number only." in (copy / "report.html").read_text()


def test_judge_scores_from_stub_server():
    """Exact replies from a small OpenAI-compatible server: what is sent, and how replies are scored."""
    import uvicorn
    from fastapi import FastAPI

    from lorakit.eval.judge import run_judge

    seen = []
    app = FastAPI()

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": "stub-judge", "object": "model", "created": 0, "owned_by": "t"}]}

    @app.post("/v1/chat/completions")
    def chat(body: dict):
        text = body["messages"][-1]["content"]
        seen.append(text)
        score = "Score: 9" if "Zorblax" in text.split("Answer to grade:")[1] else "3"
        return {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": score}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        _wait_http(f"http://127.0.0.1:{port}/v1/models", 30)
        got = run_judge(
            f"http://127.0.0.1:{port}/v1",
            None,
            [
                {
                    "prompt": "Who are you?",
                    "reference": "Zorblax.",
                    "base": "An assistant.",
                    "finetuned": "I am Zorblax.",
                }
            ],
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert got["error"] is None and got["model"] == "stub-judge"
    assert (got["base_mean"], got["finetuned_mean"]) == (3.0, 9.0)
    assert "Who are you?" in seen[0] and "An assistant." in seen[0] and "Zorblax." in seen[0]


def test_unreachable_judge_is_reported_not_fatal():
    from lorakit.eval.judge import run_judge

    got = run_judge(
        f"http://127.0.0.1:{_free_port()}", "m", [{"prompt": "Q", "reference": None, "base": "a", "finetuned": "b"}]
    )
    assert got["error"] and "Connection" in got["error"] and got["base_mean"] is None


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_report_renders_offline_in_headless_chromium(evaluated, tmp_path):
    run_dir, _ = evaluated
    # A proxy that refuses everything: the page must render from its own bytes alone.
    base = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--proxy-server=127.0.0.1:9",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    shot = tmp_path / "report.png"
    url = (run_dir / "report.html").as_uri()
    subprocess.run(
        base + ["--window-size=1280,2000", f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True
    )
    assert shot.stat().st_size > 20_000  # a blank page is a few kB
    dom = subprocess.run(base + ["--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    assert "What the fine-tune changed" in dom and "Answers side by side" in dom and "<svg" in dom
