"""Request limits and hostile text against the scripted server: 413 before the body is read, 400 for
too many messages, too long a prompt or a lone surrogate, and a kept-alive connection that survives."""

from __future__ import annotations

import http.client as httpclient
import json
import socket

import pytest
from scripted_server import API_KEY, http, running_server

from lorakit.serve.limits import Limits, lone_surrogate

CAP = 64 * 1024
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def small(tokenizer):
    """A server whose body cap is 64 KiB, so oversized bodies stay cheap to send."""
    with running_server(tokenizer, limits=Limits(max_request_bytes=CAP, max_messages=4, max_prompt_chars=500)) as s:
        yield s


def raw_request(url: str, head: str, chunks=(), read_timeout: float = 10) -> tuple[int, dict, int]:
    """Send a hand-written request (headers, then body chunks until the server stops listening);
    return (status, JSON body, bytes of body sent before the answer came)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=read_timeout)
    sent = 0
    try:
        sock.sendall(head.encode())
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply.split(b"\r\n\r\n", 1)[1]) < _length(reply):
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    finally:
        sock.close()
    status = int(reply.split(b" ", 2)[1])
    return status, json.loads(reply.split(b"\r\n\r\n", 1)[1]), sent


def _length(reply: bytes) -> int:
    for line in reply.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 30


def _head(path: str, extra: str) -> str:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {API_KEY}\r\n{extra}\r\n"
    )


def test_declared_oversized_body_is_refused_unread(small):
    url = small[0]
    status, body, _ = raw_request(url, _head("/v1/chat/completions", f"Content-Length: {100 * CAP}\r\n"))
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert set(body["error"]) == {"message", "type", "param", "code"} and "--max-request-mb" in body["error"]["message"]


def test_chunked_oversized_body_is_refused_while_streaming(small):
    url = small[0]
    piece = b'"' + b"x" * 8190 + b'"'  # 8 KiB per chunk; the server must stop us long before 4 MiB
    chunks = (b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(512))
    status, body, sent = raw_request(url, _head("/v1/completions", "Transfer-Encoding: chunked\r\n"), chunks)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert sent < 512 * 8 * 1024  # answered before the whole body went out


def test_body_under_the_cap_is_served(small):
    url = small[0]
    status, reply, _ = http("POST", f"{url}/v1/completions", {"model": "shouty", "prompt": "a" * 400, "max_tokens": 2})
    assert status == 200, reply


def test_too_many_messages_and_too_long_prompts_are_400(small):
    url = small[0]
    status, body, _ = http("POST", f"{url}/v1/chat/completions", {"model": "base-model", "messages": USER * 5})
    assert status == 400 and body["error"]["code"] == "too_many_messages" and body["error"]["param"] == "messages"
    long = [{"role": "user", "content": "y" * 300}, {"role": "assistant", "content": "z" * 201}]
    status, body, _ = http("POST", f"{url}/v1/chat/completions", {"model": "base-model", "messages": long})
    assert status == 400 and "--max-prompt-chars" in body["error"]["message"], body
    status, body, _ = http("POST", f"{url}/v1/completions", {"model": "shouty", "prompt": ["a" * 300, "b" * 201]})
    assert status == 400 and body["error"]["param"] == "prompt" and "501 characters" in body["error"]["message"]


def test_default_prompt_cap_follows_the_context(server, base_url):
    _, _, state = server
    assert state.limits.prompt_chars(state.engine.max_context) == 16 * 64
    status, body, _ = http("POST", f"{base_url}/v1/completions", {"model": "shouty", "prompt": "a" * 2000})
    assert status == 400 and "at most 1024" in body["error"]["message"]


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/v1/completions", {"model": "shouty", "prompt": "a\ud800b"}, "prompt"),
        ("/v1/completions", {"model": "shouty", "prompt": ["ok", "\udfff"]}, "prompt.1"),
        (
            "/v1/chat/completions",
            {"model": "base-model", "messages": [{"role": "user", "content": "\ud800"}]},
            "messages.0.content",
        ),
        (
            "/v1/chat/completions",
            {"model": "base-model", "messages": [{"role": "user", "content": [{"type": "text", "text": "x\udbff"}]}]},
            "messages.0.content.0.text",
        ),
        ("/v1/chat/completions", {"model": "base-model", "messages": USER, "stop": ["\ud800"]}, "stop.0"),
        ("/v1/chat/completions", {"model": "\ud800", "messages": USER}, "model"),
    ],
)
def test_lone_surrogates_are_400_and_the_connection_stays_usable(base_url, path, body, param):
    conn = httpclient.HTTPConnection(base_url.removeprefix("http://"), timeout=30)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
    try:
        conn.request("POST", path, json.dumps(body).encode(), headers)  # json.dumps escapes it as \ud800
        resp = conn.getresponse()
        reply = json.loads(resp.read())
        assert resp.status == 400 and reply["error"]["param"] == param, reply
        assert "surrogate" in reply["error"]["message"]
        conn.request("POST", "/v1/completions", json.dumps({"model": "shouty", "prompt": "hi"}).encode(), headers)
        again = conn.getresponse()  # the same kept-alive connection
        assert again.status == 200 and json.loads(again.read())["choices"][0]["text"] == "HELLO WORLD"
    finally:
        conn.close()


def test_lower_case_bearer_is_accepted(base_url):
    import urllib.request

    for scheme in ("bearer", "BEARER", "Bearer"):
        req = urllib.request.Request(f"{base_url}/v1/models", headers={"Authorization": f"{scheme} {API_KEY}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
    assert http("GET", f"{base_url}/v1/models", key=None, raw=None)[0] == 401
    req = urllib.request.Request(f"{base_url}/v1/models", headers={"Authorization": f"Basic {API_KEY}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 401


def test_lone_surrogate_paths():
    assert lone_surrogate({"a": ["ok", {"b": "\ud800"}]}) == "a.1.b"
    assert lone_surrogate({"a": "😀 你好", "n": 3, "x": None}) is None
    assert lone_surrogate("\udc80") == "body"
