"""The HTTP layer against a scripted engine: wire format, streaming, reasoning, errors, auth, queue."""

from __future__ import annotations

import http.client as httpclient
import json
import threading
import time

import openai
import pytest
from scripted_server import API_KEY, REPLIES, http

USER = [{"role": "user", "content": "hi"}]


def test_models_list_base_and_adapters(client):
    cards = {m.id: m for m in client.models.list().data}
    assert list(cards) == ["base-model", "shouty", "thinker"]
    assert cards["base-model"].parent is None and cards["shouty"].parent == "base-model"
    assert cards["thinker"].root == "/runs/thinker/adapter"


def test_chat_completion(client, tokenizer):
    r = client.chat.completions.create(model="base-model", messages=USER)
    choice = r.choices[0]
    assert (choice.message.content, choice.finish_reason, choice.message.role) == (REPLIES[None], "stop", "assistant")
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.usage.completion_tokens == len(tokenizer.encode(REPLIES[None], add_special_tokens=False)) + 1  # + EOS
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    shouty = client.chat.completions.create(model="shouty", messages=USER)
    assert shouty.choices[0].message.content == "HELLO WORLD" and shouty.model == "shouty"


def test_streaming_matches_and_reports_usage(client):
    full = client.chat.completions.create(model="base-model", messages=USER)
    chunks = list(
        client.chat.completions.create(
            model="base-model", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == full.usage.model_dump()
    assert all(c.usage is None for c in chunks[:-1])
    plain = list(client.chat.completions.create(model="base-model", messages=USER, stream=True))
    assert all(c.usage is None for c in plain) and all(c.choices for c in plain)


@pytest.mark.parametrize("stream", [False, True])
def test_stop_strings_and_max_tokens(client, stream):
    def run(**kw):
        if not stream:
            r = client.chat.completions.create(model="base-model", messages=USER, **kw)
            return r.choices[0].message.content, r.choices[0].finish_reason
        chunks = [c for c in client.chat.completions.create(model="base-model", messages=USER, stream=True, **kw)]
        return "".join(c.choices[0].delta.content or "" for c in chunks), chunks[-1].choices[0].finish_reason

    assert run(stop=["END", "nope"]) == ("Hello 你好 🫠 world. ", "stop")
    assert run(stop="🫠") == ("Hello 你好 ", "stop")
    text, finish = run(max_tokens=3)
    assert finish == "length" and REPLIES[None].startswith(text)
    assert run(max_completion_tokens=3) == (text, "length")


def test_reasoning_split(client):
    r = client.chat.completions.create(model="thinker", messages=USER)
    msg = r.choices[0].message
    assert (msg.content, msg.model_extra["reasoning_content"]) == ("Answer.", "plan the answer")
    chunks = list(client.chat.completions.create(model="thinker", messages=USER, stream=True))
    deltas = [c.choices[0].delta for c in chunks]
    assert "".join(d.model_extra.get("reasoning_content") or "" for d in deltas) == "plan the answer"
    assert "".join(d.content or "" for d in deltas) == "Answer."
    plain = client.chat.completions.create(model="base-model", messages=USER)
    assert plain.choices[0].message.model_extra.get("reasoning_content") is None


def test_thinking_switch_reaches_the_template(client):
    on = client.chat.completions.create(
        model="base-model", messages=USER, extra_body={"chat_template_kwargs": {"enable_thinking": True}}
    )
    off = client.chat.completions.create(
        model="base-model", messages=USER, extra_body={"chat_template_kwargs": {"enable_thinking": False}}
    )
    assert off.usage.prompt_tokens == on.usage.prompt_tokens + 4  # the empty <think>\n\n</think>\n\n block


def test_n_choices_and_seeds(client, tokenizer):
    r = client.chat.completions.create(model="shouty", messages=USER, n=3, seed=5)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.message.content == "HELLO WORLD" for c in r.choices)
    assert r.usage.completion_tokens == 3 * (len(tokenizer.encode("HELLO WORLD", add_special_tokens=False)) + 1)


def test_completions(client, tokenizer):
    r = client.completions.create(model="base-model", prompt="Once upon", max_tokens=5)
    assert r.object == "text_completion" and r.choices[0].finish_reason == "length"
    assert REPLIES[None].startswith(r.choices[0].text)
    many = client.completions.create(model="shouty", prompt=["a", "b"], n=2, echo=True)
    assert [c.text for c in many.choices] == ["aHELLO WORLD", "aHELLO WORLD", "bHELLO WORLD", "bHELLO WORLD"]
    ids = tokenizer.encode("Once upon", add_special_tokens=False)
    by_ids = client.completions.create(model="base-model", prompt=ids, max_tokens=5)
    assert by_ids.choices[0].text == r.choices[0].text and by_ids.usage.prompt_tokens == len(ids)
    chunks = list(
        client.completions.create(
            model="base-model", prompt="x", stream=True, stop=["END"], stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello 你好 🫠 world. "
    assert chunks[-1].usage.completion_tokens > 0


def _assert_error(status, body, expected_status, param=None, code=None):
    assert status == expected_status, body
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in json.dumps(body) and 'File "' not in json.dumps(body)
    if param is not None:
        assert body["error"]["param"] == param
    if code is not None:
        assert body["error"]["code"] == code


@pytest.mark.parametrize(
    "body,param",
    [
        ({"model": "base-model", "messages": USER, "temperature": "hot"}, "temperature"),
        ({"model": "base-model", "messages": USER, "temperature": 3}, "temperature"),
        ({"model": "base-model", "messages": USER, "top_p": 0}, "top_p"),
        ({"model": "base-model", "messages": USER, "n": 0}, "n"),
        ({"model": "base-model", "messages": USER, "max_tokens": -1}, "max_tokens"),
        ({"model": "base-model", "messages": USER, "max_tokens": True}, "max_tokens"),
        ({"model": "base-model", "messages": USER, "stream": "yes"}, "stream"),
        ({"model": "base-model", "messages": []}, "messages"),
        ({"model": "base-model", "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"model": "base-model", "messages": "hi"}, "messages"),
        ({"messages": USER}, "model"),
        ({"model": "base-model", "messages": USER, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"model": "base-model", "messages": USER, "logprobs": 1}, "logprobs"),
        ({"model": "base-model", "messages": USER, "top_logprobs": 2}, None),
        ({"model": "base-model", "messages": USER, "max_tokens": 0}, None),
        ({"model": "base-model", "messages": USER, "chat_template_kwargs": {"enable_thinking": "no"}}, None),
    ],
)
def test_bad_requests_are_400(base_url, body, param):
    status, reply, _ = http("POST", f"{base_url}/v1/chat/completions", body)
    _assert_error(status, reply, 400, param=param)


def test_malformed_json_unknown_model_context_and_routes(base_url):
    status, body, _ = http("POST", f"{base_url}/v1/chat/completions", raw=b'{"model": "base-model", "messages": [')
    _assert_error(status, body, 400)
    assert "JSON" in body["error"]["message"]
    status, body, _ = http("POST", f"{base_url}/v1/completions", raw=b"hello", content_type="text/plain")
    _assert_error(status, body, 400)
    status, body, _ = http("POST", f"{base_url}/v1/chat/completions", {"model": "nope", "messages": USER})
    _assert_error(status, body, 404, param="model", code="model_not_found")
    status, body, _ = http(
        "POST", f"{base_url}/v1/chat/completions", {"model": "base-model", "messages": USER, "max_tokens": 60}
    )
    _assert_error(status, body, 400, code="context_length_exceeded")
    status, body, _ = http("POST", f"{base_url}/v1/completions", {"model": "base-model", "prompt": "1" * 100})
    _assert_error(status, body, 400, code="context_length_exceeded")
    status, body, _ = http("POST", f"{base_url}/v1/completions", {"model": "base-model", "prompt": [10**9]})
    _assert_error(status, body, 400, param="prompt")
    _assert_error(*http("GET", f"{base_url}/v1/nothing")[:2], 404)
    _assert_error(*http("GET", f"{base_url}/v1/chat/completions")[:2], 405)


def test_openai_client_error_types(base_url, client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=USER)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="base-model", messages=USER, temperature=5)
    bad_key = openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.models.list()


def test_auth_guards_only_the_api(base_url):
    _assert_error(*http("GET", f"{base_url}/v1/models", key=None)[:2], 401, code="invalid_api_key")
    _assert_error(*http("GET", f"{base_url}/v1/models", key="wrong")[:2], 401)
    assert http("GET", f"{base_url}/health", key=None)[0] == 200
    status, page, _ = http("GET", f"{base_url}/", key=None)
    assert status == 200 and "/v1/chat/completions" in page
    status, schema, _ = http("GET", f"{base_url}/openapi.json", key=None)
    assert status == 200 and "/v1/chat/completions" in schema["paths"]


def test_internal_errors_hide_details(server, base_url, client):
    _, model, _ = server
    model.fail = True
    status, body, _ = http("POST", f"{base_url}/v1/chat/completions", {"model": "base-model", "messages": USER})
    _assert_error(status, body, 500)
    assert "secret" not in json.dumps(body)
    with pytest.raises(openai.APIError, match="generation failed"):  # an error event ends the stream
        list(client.chat.completions.create(model="base-model", messages=USER, stream=True))
    model.fail = False
    assert client.chat.completions.create(model="base-model", messages=USER).choices[0].finish_reason == "stop"


def test_concurrent_requests_do_not_mix(server, client):
    _, model, _ = server
    model.delay = 0.002
    expected = {"base-model": REPLIES[None], "shouty": "HELLO WORLD", "thinker": "Answer."}
    errors, results = [], []

    def worker(name, stream):
        try:
            if stream:
                chunks = client.chat.completions.create(model=name, messages=USER, stream=True)
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            else:
                text = client.chat.completions.create(model=name, messages=USER).choices[0].message.content
            results.append(text == expected[name])
        except Exception as e:  # collected: assertions in threads would be lost
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(name, i % 2 == 0)) for i, name in enumerate(list(expected) * 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(results) and len(results) == 12


def test_full_queue_answers_503(server, base_url):
    _, model, state = server
    model.delay = 0.3  # ~5 s per request: long enough to fill the waiting room
    state.worker.max_queue = 2
    try:
        body = json.dumps({"model": "base-model", "messages": USER}).encode()
        conns = []
        for _ in range(3):  # one runs, two wait
            conn = httpclient.HTTPConnection(base_url.removeprefix("http://"), timeout=60)
            conn.request(
                "POST",
                "/v1/chat/completions",
                body,
                {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
            )
            conns.append(conn)
            time.sleep(0.3)
        deadline = time.time() + 10
        while state.worker.waiting < 2 and time.time() < deadline:
            time.sleep(0.05)
        body = {"model": "base-model", "messages": USER}
        status, reply, headers = http("POST", f"{base_url}/v1/chat/completions", body)
        _assert_error(status, reply, 503, code="queue_full")
        assert headers["Retry-After"]
    finally:
        model.delay = 0.0
        state.worker.max_queue = 16
    for conn in conns:
        assert conn.getresponse().status == 200
        conn.close()


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/chat/completions", {"model": "base-model", "messages": USER}),
        ("/v1/completions", {"model": "base-model", "prompt": "hello"}),
    ],
)
def test_client_disconnect_stops_a_whole_answer_too(server, base_url, path, body):
    """A non-streamed request whose client hangs up stops generating instead of finishing for nobody."""
    _, model, state = server
    model.delay = 0.2
    conn = httpclient.HTTPConnection(base_url.removeprefix("http://"), timeout=30)
    try:
        start = model.forwards
        conn.request(
            "POST",
            path,
            json.dumps(body).encode(),
            {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
        )
        deadline = time.time() + 10
        while model.forwards < start + 2 and time.time() < deadline:  # generation under way
            time.sleep(0.05)
        conn.close()  # hang up before the answer
        time.sleep(1.5)
        stopped_at = model.forwards
        time.sleep(0.6)
        assert model.forwards == stopped_at and stopped_at - start < len(model.scripts[None]) - 2
    finally:
        model.delay = 0.0


def test_client_disconnect_stops_generation(server, base_url):
    _, model, state = server
    model.delay = 0.2
    conn = httpclient.HTTPConnection(base_url.removeprefix("http://"), timeout=30)
    conn.request(
        "POST",
        "/v1/chat/completions",
        json.dumps({"model": "base-model", "messages": USER, "stream": True}).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
    )
    resp = conn.getresponse()
    resp.readline()
    start = model.forwards
    conn.close()  # hang up mid-stream
    time.sleep(1.5)
    stopped_at = model.forwards
    time.sleep(0.6)
    assert model.forwards == stopped_at and stopped_at - start < len(model.scripts[None]) - 2


def test_logprobs_shapes_and_limits(base_url, client, tokenizer):
    """Legacy and chat logprob shapes (values are checked against transformers in
    tests/integration/test_eval_tasks.py); the top_logprobs cap; max_tokens 0 only with echo."""
    ids = tokenizer.encode("one two three", add_special_tokens=False)
    r = client.completions.create(model="base-model", prompt=ids, max_tokens=0, echo=True, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(ids) and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(isinstance(v, float) for v in lp.token_logprobs[1:]) and r.usage.completion_tokens == 0
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    r = client.completions.create(
        model="base-model", prompt=[ids, ids], max_tokens=1, echo=True, logprobs=1, temperature=0
    )
    for choice in r.choices:  # prompt tokens + the one generated (what lm-eval's local-completions reads)
        assert len(choice.logprobs.token_logprobs) == len(ids) + 1
        assert max(choice.logprobs.top_logprobs[-1].values()) == choice.logprobs.token_logprobs[-1]
    r = client.chat.completions.create(model="base-model", messages=USER, logprobs=True, top_logprobs=3, max_tokens=4)
    content = r.choices[0].logprobs.content
    assert len(content) == 4 and all(len(e.top_logprobs) == 3 for e in content)
    streamed = [
        e
        for c in client.chat.completions.create(
            model="base-model", messages=USER, logprobs=True, top_logprobs=1, max_tokens=4, stream=True
        )
        for ch in c.choices
        if ch.logprobs
        for e in ch.logprobs.content
    ]
    assert [e.token for e in streamed] == [e.token for e in content]
    for path, body, param in (
        ("/v1/completions", {"model": "base-model", "prompt": "x", "logprobs": 21}, "logprobs"),
        ("/v1/completions", {"model": "base-model", "prompt": "x", "max_tokens": 0}, None),
        ("/v1/completions", {"model": "base-model", "prompt": "x", "logprobs": True}, "logprobs"),
    ):
        status, reply, _ = http("POST", base_url + path, body)
        _assert_error(status, reply, 400, param=param)
