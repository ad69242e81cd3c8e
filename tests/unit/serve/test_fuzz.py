"""Random mutations of valid requests: the server may refuse them, but never with a 500."""

from __future__ import annotations

import json
import random

from scripted_server import http

ODD_VALUES = [None, True, -1, 0, 1, 2**70, -(2**70), 1e-300, 1e300, -0.5, "", "x", "1", [], [1], ["a"], {}, {"a": 1},
              [[1, 2]], [None], "\u0000\ud7ff", 0.7, 16, 17]  # fmt: skip
CHAT = {"model": "base-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
COMPLETION = {"model": "shouty", "prompt": "hi", "max_tokens": 4}
FIELDS = ["model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "n",
          "stream", "stream_options", "stop", "seed", "presence_penalty", "frequency_penalty", "repetition_penalty",
          "logprobs", "chat_template_kwargs", "echo", "suffix", "user", "tools", "tool_choice",
          "parallel_tool_calls", "response_format"]  # fmt: skip
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def mutate(rng: random.Random, base: dict) -> dict:
    body = json.loads(json.dumps(base))
    for _ in range(rng.randint(1, 3)):
        field = rng.choice(FIELDS)
        if rng.random() < 0.15:
            body.pop(field, None)
        else:
            body[field] = rng.choice(ODD_VALUES)
    if rng.random() < 0.2 and isinstance(body.get("messages"), list) and body["messages"]:
        body["messages"][0] = {rng.choice(["role", "content", "name"]): rng.choice(ODD_VALUES)}
    if rng.random() < 0.1 and "messages" in body:
        body["tools"] = [TOOL]
        body["tool_choice"] = rng.choice(
            ["auto", "none", "required", {"type": "function", "function": {"name": "f"}}, rng.choice(ODD_VALUES)]
        )
        body["response_format"] = rng.choice([None, {"type": "json_object"}, {"type": "text"}])
    if rng.random() < 0.1:
        body["chat_template_kwargs"] = {rng.choice(["enable_thinking", "tokenize", "foo"]): rng.choice(ODD_VALUES)}
    return body


def test_no_request_gets_a_500(base_url):
    rng = random.Random(int(__import__("os").environ.get("FUZZ_SEED", 0)))
    seen = {}
    for i in range(int(__import__("os").environ.get("FUZZ_N", 160))):
        path, base = ("/v1/chat/completions", CHAT) if i % 2 else ("/v1/completions", COMPLETION)
        body = mutate(rng, base)
        status, reply, _ = http("POST", base_url + path, body)
        seen[status] = seen.get(status, 0) + 1
        assert status < 500, (path, body, reply)
        if status >= 400:
            assert set(reply["error"]) == {"message", "type", "param", "code"}
    assert seen.get(200) and seen.get(400)  # both sides of the line were exercised
