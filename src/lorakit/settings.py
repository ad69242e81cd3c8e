"""lorakit's environment variables, read here and nowhere else (docs/environment.md lists them).

Each variable has one typed accessor that reads it when called, so a test or a notebook that sets it
later is seen. None of them changes the mathematics of training: what does lives in the config, where
config.yaml records it and `--resume` checks it. Variables of the launchers (torchrun's `WORLD_SIZE`,
`LOCAL_RANK`, accelerate's `ACCELERATE_*`) are read where the launch is handled
(lorakit.training.distributed, lorakit.doctor).

A leaf: imports nothing from lorakit but its error type, so any module may import it.
"""

from __future__ import annotations

import os
from pathlib import Path

from lorakit.errors import LorakitError

CACHE = "LORAKIT_CACHE"
LLAMA_SERVER = "LORAKIT_LLAMA_SERVER"
JUDGE_API_KEY = "LORAKIT_JUDGE_API_KEY"
GENERATION_SERVER_KEY = "LORAKIT_GENERATION_SERVER_KEY"
DEBUG = "LORAKIT_DEBUG"
LLAMA_CPP_LIB = "LORAKIT_LLAMA_CPP_LIB"

# Variables that once chose training's fast paths; they changed the mathematics outside the config, so
# the config holds them now. Still set, they would be ignored silently: training refuses instead.
RETIRED = {
    "LORAKIT_ATTENTION": "train.attention (auto | packed | fallback)",
    "LORAKIT_PACKED_ATTENTION": "train.packed_attention (auto | per_sample | whole_row)",
    "LORAKIT_FUSED": "train.fused (auto | on | off)",
}


def cache_dir() -> Path | None:
    """LORAKIT_CACHE: lorakit's cache folder (built-in models, downloads, prepared data, replay answers);
    None when unset (lorakit.models.cache_root then uses ~/.cache/lorakit)."""
    value = _get(CACHE)
    return Path(value).expanduser() if value else None


def llama_server() -> str | None:
    """LORAKIT_LLAMA_SERVER: the llama-server binary `lorakit serve --engine llama.cpp` runs, where it is not
    on PATH; None when unset."""
    return _get(LLAMA_SERVER)


def llama_cpp_lib() -> Path | None:
    """LORAKIT_LLAMA_CPP_LIB: the folder holding the pinned libllama that `lorakit export --quant q4_k_m`
    (and the other K-quants) calls; when set, the only place looked at. None when unset."""
    value = _get(LLAMA_CPP_LIB)
    return Path(value).expanduser() if value else None


def judge_api_key() -> str | None:
    """LORAKIT_JUDGE_API_KEY, else OPENAI_API_KEY: the key `lorakit eval --judge-url` sends to a hosted
    judge; None when neither is set (a local server accepts any key)."""
    return _get(JUDGE_API_KEY) or _get("OPENAI_API_KEY")


def generation_server_key() -> str | None:
    """LORAKIT_GENERATION_SERVER_KEY: the API key GRPO's rollouts send to train.generation_server (its
    --api-key, kept out of config.yaml); None when unset."""
    return _get(GENERATION_SERVER_KEY)


def debug() -> bool:
    """LORAKIT_DEBUG: any non-empty value makes the CLI show the traceback of an unexpected error instead
    of one line."""
    return bool(_get(DEBUG))


def refuse_retired() -> None:
    """Stop, in one line, when a retired fast-path variable is still set (it would no longer be read)."""
    found = [name for name in RETIRED if name in os.environ]
    if found:
        instead = "; ".join(f"{name} -> {RETIRED[name]}" for name in found)
        raise LorakitError(
            f"{', '.join(found)}: no longer read; training's fast paths are config keys now "
            f"({instead}): set the key and unset the variable"
        )


def _get(name: str) -> str | None:
    return os.environ.get(name) or None
