"""Fixtures for the serve tests (the helpers live in scripted_server.py, a name no other conftest shadows)."""

from __future__ import annotations

import pytest
from scripted_server import API_KEY, running_server


@pytest.fixture(scope="session")
def tokenizer():
    from lorakit import models

    return models.load_tokenizer(models.resolve_model("qwen3-tiny-random"))


@pytest.fixture(scope="module")
def server(tokenizer):
    with running_server(tokenizer) as s:
        yield s


@pytest.fixture
def base_url(server):
    url, model, _ = server
    model.delay, model.fail = 0.0, False
    return url


@pytest.fixture
def client(base_url):
    from openai import OpenAI

    return OpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0, timeout=30)
