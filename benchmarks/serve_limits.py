"""What oversized requests cost a real `lorakit serve` (issue 18, item 6): time to the refusal, the
server's RSS before / after, and a normal request's latency while a huge prompt arrives.

    .venv/bin/python benchmarks/serve_limits.py            # default limits (8 MiB body)

Loopback only; the server is `lorakit serve --model qwen3-tiny-random` on a free port.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import httpx

LORAKIT = str(Path(sys.executable).parent / "lorakit")
MODEL = "qwen3-tiny-random"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def normal(url: str) -> float:
    start = time.perf_counter()
    r = httpx.post(
        f"{url}/v1/completions",
        json={"model": MODEL, "prompt": "Once upon a time", "max_tokens": 3, "temperature": 0},
        timeout=300,
    )
    assert r.status_code == 200, r.text
    return time.perf_counter() - start


def timed_post(url: str, path: str, body: bytes) -> tuple[int, float]:
    start = time.perf_counter()
    try:
        r = httpx.post(f"{url}{path}", content=body, headers={"Content-Type": "application/json"}, timeout=300)
        status = r.status_code
    except httpx.HTTPError as e:  # the server may close while the client still sends
        status = getattr(getattr(e, "response", None), "status_code", None) or type(e).__name__
    return status, time.perf_counter() - start


def main() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [LORAKIT, "serve", "--model", MODEL, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        alone = [normal(url) for _ in range(3)]
        before = rss_mib(proc.pid)
        fifty = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * (50 << 20)}]}).encode()
        status, seconds = timed_post(url, "/v1/chat/completions", fifty)
        print(
            json.dumps(
                {
                    "case": "50 MB chat body",
                    "status": status,
                    "seconds": round(seconds, 2),
                    "rss_before_mib": round(before),
                    "rss_after_mib": round(rss_mib(proc.pid)),
                }
            )
        )
        ten = json.dumps({"model": MODEL, "prompt": "word " * (2 << 20)}).encode()  # 10 MiB
        seven = json.dumps({"model": MODEL, "prompt": "word " * ((7 << 20) // 5)}).encode()  # 7 MiB: under the cap
        for label, body in (("10 MB prompt", ten), ("7 MB prompt", seven)):
            result: dict = {}
            t = threading.Thread(
                target=lambda result=result, body=body: result.update(
                    zip(("status", "seconds"), timed_post(url, "/v1/completions", body))
                )
            )
            t.start()
            time.sleep(0.05)
            during = normal(url)
            t.join()
            print(
                json.dumps(
                    {
                        "case": label,
                        "status": result["status"],
                        "seconds": round(result["seconds"], 2),
                        "normal_alone_s": round(min(alone), 2),
                        "normal_during_s": round(during, 2),
                        "rss_after_mib": round(rss_mib(proc.pid)),
                    }
                )
            )
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
