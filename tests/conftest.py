"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def lorakit_cache() -> Path:
    """One model cache for the whole test session, kept between runs (gitignored) so built-ins build once."""
    import torch

    # Two threads: the machines running tests are shared; more threads only contend.
    torch.set_num_threads(2)
    cache = REPO / "tests" / ".cache"
    cache.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("LORAKIT_CACHE")
    os.environ["LORAKIT_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("LORAKIT_CACHE", None)
    else:
        os.environ["LORAKIT_CACHE"] = old
