"""`lorakit serve` for real: the CLI in a subprocess, talked to with the official openai client.

One server per model for the whole module: qwen3-tiny-random with two LoRA adapters (exact greedy
outputs compared with the in-process engine), and smollm2-135m-instruct (a real model answering).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import openai
import pytest
from fake_runs import make_run

LORAKIT = str(Path(sys.executable).parent / "lorakit")
BASE = "qwen3-tiny-random"
KEY = "sk-integration"
NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`lorakit serve ARGS` on a free loopback port, until stop()."""

    def __init__(self, args: list[str], log: Path, timeout: float = 180):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc = subprocess.Popen(
            [LORAKIT, "serve", *args, "--port", str(self.port)],
            stdout=open(log, "w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except OSError:
                if time.time() > deadline:
                    self.stop()
                    raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.3)

    def client(self, key: str | None = None, retries: int = 0) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key or "none", max_retries=retries, timeout=120)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {name: make_run(root / name, BASE, seed) for name, seed in (("a", 1), ("b", 2))}


@pytest.fixture(scope="module")
def qwen(runs, tmp_path_factory):
    args = [
        "--lora-modules",
        f"a={runs['a']}",
        "--lora-modules",
        f"b={runs['b']}",
        "--api-key",
        KEY,
        "--max-model-len",
        "512",
    ]
    server = Server(args, tmp_path_factory.mktemp("logs") / "qwen.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def expected(runs):
    """Greedy answers of base, a and b from the in-process engine, for exact comparison."""
    from lorakit.inference.engine import Engine, SamplingParams

    engine = Engine.load(None, {name: str(p) for name, p in runs.items()})
    out = {}
    for prompt in PROMPTS:
        ids = engine.chat_prompt([{"role": "user", "content": prompt}], enable_thinking=False)
        for name in (BASE, "a", "b"):
            chunk = engine.generate(
                ids, SamplingParams(temperature=0, max_new_tokens=12), adapter=None if name == BASE else name
            )
            out[prompt, name] = chunk.text
    return out


PROMPTS = ["tell me a story", "what is 2+2?", "你好"]


def chat(client, model, prompt, stream=False, **kw):
    args = dict(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        temperature=0,
        max_tokens=12,
        extra_body=NO_THINK,
        **kw,
    )
    if not stream:
        return client.chat.completions.create(**args).choices[0].message.content
    return "".join(
        c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **args) if c.choices
    )


def test_models_list_adapters_with_parent(qwen, runs):
    cards = {m.id: m for m in qwen.client(KEY).models.list().data}
    assert list(cards) == [BASE, "a", "b"]
    assert cards["a"].parent == BASE and cards["b"].parent == BASE and cards[BASE].parent is None
    assert cards["a"].root == str((runs["a"] / "adapter").resolve())


def test_adapters_answer_like_the_engine(qwen, expected):
    client = qwen.client(KEY)
    for name in (BASE, "a", "b"):
        assert chat(client, name, PROMPTS[0]) == expected[PROMPTS[0], name]
        assert chat(client, name, PROMPTS[0], stream=True) == expected[PROMPTS[0], name]
    assert len({expected[PROMPTS[0], n] for n in (BASE, "a", "b")}) == 3


def test_concurrent_clients_get_their_own_answers(qwen, expected):
    client = qwen.client(KEY, retries=2)
    jobs = [(p, m, i % 2 == 0) for i, (p, m) in enumerate((p, m) for p in PROMPTS for m in (BASE, "a", "b"))]
    failures: list = []

    def run(prompt, model, stream):
        try:
            got = chat(client, model, prompt, stream=stream)
            if got != expected[prompt, model]:
                failures.append((prompt, model, got))
        except Exception as e:  # collected: assertions inside threads would be lost
            failures.append(e)

    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_usage_thinking_and_completions(qwen):
    client = qwen.client(KEY)
    msgs = [{"role": "user", "content": "hi"}]
    on = client.chat.completions.create(model="a", messages=msgs, max_tokens=4, seed=1)
    off = client.chat.completions.create(model="a", messages=msgs, max_tokens=4, seed=1, extra_body=NO_THINK)
    assert off.usage.prompt_tokens == on.usage.prompt_tokens + 4  # the empty think block
    assert (on.usage.completion_tokens, on.choices[0].finish_reason) == (4, "length")
    r = client.completions.create(model="b", prompt="Once upon a time", max_tokens=5, seed=3)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5
    again = client.completions.create(model="b", prompt="Once upon a time", max_tokens=5, seed=3)
    assert again.choices[0].text == r.choices[0].text
    chunks = list(
        client.completions.create(
            model="b",
            prompt="Once upon a time",
            max_tokens=5,
            seed=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == r.choices[0].text
    assert chunks[-1].usage.completion_tokens == 5


def test_errors_through_the_client(qwen):
    client = qwen.client(KEY)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="c", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="maximum context length is 512"):
        client.chat.completions.create(model="a", messages=[{"role": "user", "content": "x"}], max_tokens=600)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="a", messages=[{"role": "user", "content": "x"}], top_p=2)
    with pytest.raises(openai.AuthenticationError):
        qwen.client("wrong").models.list()
    log = qwen.log.read_text()
    assert "chat model=a" in log and 'POST /v1/chat/completions HTTP/1.1" 400' in log
    assert "Traceback" not in log


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    server = Server(
        ["--model", "smollm2-135m-instruct", "--served-model-name", "smol"],
        tmp_path_factory.mktemp("logs") / "smol.log",
    )
    yield server
    server.stop()


QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_real_model_answers(smol):
    client = smol.client()
    r = client.chat.completions.create(model="smol", messages=QUESTION, temperature=0, max_tokens=12)
    assert "Paris" in r.choices[0].message.content
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="smol", messages=QUESTION, temperature=0, max_tokens=12, stream=True
        )
        if c.choices
    )
    assert streamed == r.choices[0].message.content
    cut = client.chat.completions.create(model="smol", messages=QUESTION, temperature=0, max_tokens=12, stop=["Paris"])
    assert cut.choices[0].finish_reason == "stop" and "Paris" not in cut.choices[0].message.content
    assert r.choices[0].message.content.startswith(cut.choices[0].message.content)
    text = client.completions.create(model="smol", prompt="The capital of France is", max_tokens=4, temperature=0)
    assert "Paris" in text.choices[0].text


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([LORAKIT, *args], capture_output=True, text=True, timeout=120)


def test_vllm_command_from_the_cli(runs):
    done = run_cli(
        "serve",
        "--engine",
        "vllm",
        "--print-command",
        "--lora-modules",
        f"a={runs['a']}",
        "--served-model-name",
        "qwen",
        "--max-model-len",
        "4096",
    )
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith("vllm serve ") and "\n" not in line
    assert "--enable-lora" in line and "--max-lora-rank 8" in line and f"a={(runs['a'] / 'adapter').resolve()}" in line
    assert "--served-model-name qwen" in line and "--max-model-len 4096" in line
    if not any((Path(p) / "vllm").exists() for p in os.environ.get("PATH", "").split(os.pathsep)):
        done = run_cli("serve", "--engine", "vllm", "--model", BASE)
        assert done.returncode == 2 and done.stderr.strip().startswith("error: vLLM is not installed")
        assert len(done.stderr.strip().splitlines()) == 1


def test_cli_errors_are_one_line(runs):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        done = run_cli("serve", "--model", BASE, "--port", str(busy.getsockname()[1]))
    assert done.returncode == 2 and "cannot listen" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = run_cli("serve", "--lora-modules", "broken")
    assert done.returncode == 2 and "NAME=RUN_DIR" in done.stderr
