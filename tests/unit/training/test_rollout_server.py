"""train.generation_server's rules without a model: the setting (GRPO only, a URL), the resume rule (the
address may change, the sampling engine may not), and the client's one-line errors for answers of the wrong
shape. The rollouts themselves run against a real server in tests/integration/test_train_grpo_server.py."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from lorakit.config import load_config
from lorakit.errors import LorakitError
from lorakit.training.generation_server import GenerationServer
from lorakit.training.resume import changes

GRPO = {"method": "grpo", "rewards": ["lorakit.training.rewards_builtin:length_penalty"]}


def test_the_setting_is_grpo_only_and_a_url():
    cfg = load_config({"train": {**GRPO, "generation_server": "http://127.0.0.1:8000"}})
    assert cfg.train.generation_server == "http://127.0.0.1:8000"
    with pytest.raises(LorakitError, match="train.generation_server: a GRPO setting, but train.method is sft"):
        load_config({"train": {"generation_server": "http://127.0.0.1:8000"}})
    with pytest.raises(LorakitError, match=r"train.generation_server: .*expected http://host:port"):
        load_config({"train": {**GRPO, "generation_server": "127.0.0.1:8000"}})


def test_resume_lets_the_address_change_but_not_the_sampling_engine():
    from lorakit.training.objectives.grpo import GRPO as Objective

    a = load_config({"train": {**GRPO, "generation_server": "http://127.0.0.1:8000"}})
    b = load_config({"train": {**GRPO, "generation_server": "http://10.0.0.2:9000"}})
    assert changes({"config": a.model_dump(mode="json")}, {"config": b.model_dump(mode="json")}) == []

    objective = Objective(b)
    objective.load_state_dict({"rng": None})  # a checkpoint from before servers: sampled in process
    objective._check_engine("lorakit", [])
    objective.load_state_dict({"rng": None, "engine": "lorakit"})
    with pytest.raises(LorakitError, match="sampled by lorakit, now by vllm .* or pass --resume-anyway"):
        objective._check_engine("vllm", [{"resume_anyway": False}])
    record = {"resume_anyway": True, "changed": []}
    objective._check_engine("vllm", [record])
    assert record["changed"] == ["the completions were sampled by lorakit, now by vllm (train.generation_server)"]
    assert objective.state_dict()["engine"] == "vllm"


def _client(answer) -> GenerationServer:
    app = FastAPI()
    app.post("/v1/completions")(lambda: answer)
    client = GenerationServer("http://testserver")
    client.http = TestClient(app)  # an httpx.Client: the client's own request code, in process
    return client


BODY = {"model": "m", "prompt": [1, 2], "max_tokens": 4, "seed": 1, "return_token_ids": True}


def test_an_answer_of_the_wrong_shape_is_one_line():
    ok = _client({"choices": [{"index": 0, "text": "", "token_ids": [5, 6], "finish_reason": "length"}]})
    assert ok.complete(BODY).token_ids == [5, 6]
    no_ids = _client({"choices": [{"index": 0, "text": "hi", "finish_reason": "stop"}]})  # an older vLLM
    with pytest.raises(LorakitError, match=r"answered without token ids .* vLLM >= 0.10.2"):
        no_ids.complete(BODY)
    too_long = _client({"choices": [{"index": 0, "text": "", "token_ids": [1] * 5, "finish_reason": "length"}]})
    with pytest.raises(LorakitError, match="answered 5 tokens with finish_reason 'length' for max_tokens 4"):
        too_long.complete(BODY)
    with pytest.raises(LorakitError, match=r"refused \(400\): nope"):
        _client_error(400, {"error": {"message": "nope", "type": "invalid_request_error"}}).complete(BODY)


def _client_error(status: int, body: dict) -> GenerationServer:
    from fastapi.responses import JSONResponse

    app = FastAPI()
    app.post("/v1/completions")(lambda: JSONResponse(body, status_code=status))
    client = GenerationServer("http://testserver")
    client.http = TestClient(app)
    return client


def test_a_full_queue_is_waited_out():
    from fastapi.responses import JSONResponse

    answers = [JSONResponse({"error": {"message": "busy"}}, 503, headers={"Retry-After": "0.1"})] * 2
    answers.append({"choices": [{"index": 0, "text": "", "token_ids": [7], "finish_reason": "stop"}]})
    app = FastAPI()
    app.post("/v1/completions")(lambda: answers.pop(0))
    client = GenerationServer("http://testserver")
    client.http = TestClient(app)
    assert client.complete(BODY).token_ids == [7] and not answers
