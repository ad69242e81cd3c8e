"""Load on the real server: 16 concurrent clients, 500 requests, exact answers, flat memory."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

LORAKIT = str(Path(sys.executable).parent / "lorakit")
PROMPTS = ["tell me a story", "what is 2+2?", "你好", "list three colours", "why is the sky blue?"]
CLIENTS, REQUESTS = 16, 500


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("logs") / "load.log"
    args = ["serve", "--model", "qwen3-tiny-random", "--port", str(port), "--max-queue", "32"]
    proc = subprocess.Popen([LORAKIT, *args], stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            assert time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
    yield url, proc
    proc.terminate()
    proc.wait(15)


@pytest.mark.slow
def test_many_concurrent_clients(server):
    url, proc = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=300)
    if sys.platform != "linux":
        pytest.skip("reads /proc for memory")

    def ask(i: int) -> tuple[int, str]:
        prompt = PROMPTS[i % len(PROMPTS)]
        args = dict(
            model="qwen3-tiny-random",
            messages=[{"role": "user", "content": prompt}],
            temperature=0,
            max_tokens=8,
            extra_body={"chat_template_kwargs": {"enable_thinking": False}},
        )
        if i % 2:
            stream = client.chat.completions.create(stream=True, **args)
            return i, "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        return i, client.chat.completions.create(**args).choices[0].message.content

    expected = {i: text for i, text in map(ask, range(len(PROMPTS) * 2))}  # one at a time: the reference
    reference = {i % len(PROMPTS): text for i, text in expected.items() if i % 2 == 0}
    assert all(reference[i % len(PROMPTS)] == text for i, text in expected.items())  # stream == non-stream

    with ThreadPoolExecutor(CLIENTS) as pool:
        first = list(pool.map(ask, range(REQUESTS // 2)))
        mid = rss_mb(proc.pid)
        second = list(pool.map(ask, range(REQUESTS // 2, REQUESTS)))
    end = rss_mb(proc.pid)
    wrong = [(i, text) for i, text in first + second if text != reference[i % len(PROMPTS)]]
    assert wrong == []
    assert end - mid < 25, f"server memory grew from {mid:.0f} MB to {end:.0f} MB over {REQUESTS // 2} requests"
    assert proc.poll() is None
