"""Helpers for the serve tests: an in-process server around a real Engine with a scripted model.

The scripted model emits a fixed reply per adapter (base, "shouty", "thinker"), can be slowed down
(`delay` seconds per forward pass) and can be made to fail, so queueing, cancellation and error paths
are testable without timing luck on a real model.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import torch

REPLIES = {
    None: "Hello 你好 🫠 world. END more words",
    "shouty": "HELLO WORLD",
    "thinker": "<think>\nplan the answer\n</think>\n\nAnswer.",
}
API_KEY = "sk-test-key"


class ScriptedModel(torch.nn.Module):
    """Emits the reply of the active adapter token by token, then EOS, whatever the prompt."""

    def __init__(self, tokenizer):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.eos = len(tokenizer), tokenizer.eos_token_id
        self.scripts = {k: tokenizer.encode(v, add_special_tokens=False) + [self.eos] for k, v in REPLIES.items()}
        self.config = SimpleNamespace(max_position_embeddings=64)
        self.generation_config = SimpleNamespace(eos_token_id=[self.eos])
        self.active: str | None = None
        self.delay = 0.0
        self.fail = False
        self.forwards = 0
        self.last_prompt: list[int] = []

    def set_adapter(self, name):
        self.active = name

    @contextlib.contextmanager
    def disable_adapter(self):
        previous, self.active = self.active, None
        try:
            yield
        finally:
            self.active = previous

    def forward(self, input_ids, use_cache=True, logits_to_keep=1, cache=None, **_scoring):
        if self.fail:
            raise RuntimeError("scripted failure /secret/path/model.py line 1")
        self.forwards += 1
        if self.delay:
            time.sleep(self.delay)
        if not use_cache:  # Engine.score (echo logprobs): the reply's first token is likeliest everywhere
            rows = torch.full((input_ids.shape[0], logits_to_keep, self.vocab), -100.0)
            rows[..., self.scripts[self.active][0]] = 10.0
            return SimpleNamespace(logits=rows)
        step = cache or 0
        if step == 0:
            self.last_prompt = input_ids[0].tolist()
        script = self.scripts[self.active]
        row = torch.full((self.vocab,), -100.0)
        row[script[min(step, len(script) - 1)]] = 10.0
        return SimpleNamespace(logits=row.view(1, 1, -1), cache=step + 1)


@contextlib.contextmanager
def running_server(tokenizer, max_queue: int = 16, api_key: str | None = API_KEY, limits=None):
    """Start uvicorn in a thread on a free port; yield (base_url, model, state)."""
    import uvicorn

    from lorakit.inference.engine import Engine
    from lorakit.serve.app import create_app
    from lorakit.serve.handlers import ServerState
    from lorakit.serve.worker import Worker

    model = ScriptedModel(tokenizer)
    engine = Engine(model, tokenizer, adapters=["shouty", "thinker"])
    state = ServerState(
        engine,
        Worker(engine, max_queue),
        "base-model",
        "/models/base",
        adapters={"shouty": "/runs/shouty/adapter", "thinker": "/runs/thinker/adapter"},
    )
    if limits is not None:
        state.limits = limits
    server = uvicorn.Server(uvicorn.Config(create_app(state, api_key), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", model, state
    finally:
        server.should_exit = True
        thread.join(10)
        state.worker.stop()


def http(
    method: str,
    url: str,
    body=None,
    key: str | None = API_KEY,
    raw: bytes | None = None,
    content_type: str = "application/json",
):
    """A plain HTTP request: returns (status, parsed JSON or text, headers)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", content_type)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, text, headers = resp.status, resp.read().decode(), resp.headers
    except urllib.error.HTTPError as e:
        status, text, headers = e.code, e.read().decode(), e.headers
    try:
        return status, json.loads(text), headers
    except json.JSONDecodeError:
        return status, text, headers
