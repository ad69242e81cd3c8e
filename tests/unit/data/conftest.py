"""Tokenizers for the data tests: the real Qwen3 tokenizer (built offline) and SmolLM2's, both with their
chat templates."""

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def qwen3_tok(lorakit_cache):
    from lorakit.models import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model("qwen3-tiny-random"))


@pytest.fixture(scope="session")
def smol_tok(lorakit_cache):
    from lorakit.models import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model("smollm2-135m-instruct"))
