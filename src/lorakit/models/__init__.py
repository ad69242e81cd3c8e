"""Model references -> local Hugging Face folders -> loaded tokenizer and model.

A reference is a local folder, a built-in name (built offline into the cache on first use) or a hub id
`org/name` that `lorakit download` fetched earlier. Resolving never touches the network.
"""

from __future__ import annotations

from pathlib import Path

from lorakit import settings
from lorakit.errors import LorakitError
from lorakit.models.builtin import BUILTIN_MODELS, materialise
from lorakit.models.hub import SOURCES, cached_hub_model, download_hub_model, hub_dir, is_hub_id
from lorakit.models.loading import load_model_from, load_tokenizer_from

__all__ = ["BUILTIN_MODELS", "cache_root", "resolve_model", "download", "load_tokenizer", "load_model"]


def cache_root(cache_dir: str | None = None) -> Path:
    """lorakit's cache folder: `cache_dir`, else $LORAKIT_CACHE, else ~/.cache/lorakit."""
    root = cache_dir or settings.cache_dir() or Path.home() / ".cache" / "lorakit"
    return Path(root).expanduser()


def resolve_model(ref: str, source: str | None = None, cache_dir: str | None = None) -> Path:
    """Turn a model reference into a local folder holding config, weights and tokenizer.

    Local folder -> itself (it must hold config.json); built-in name -> built once into the cache;
    hub id `org/name` -> its cached download from `source`, or with no source from whichever hub it
    was downloaded from (Hugging Face first), so `chat --model Qwen/Qwen3-4B` finds a ModelScope
    download. Never downloads: a missing hub model is an error that says to run `lorakit download ID`.
    """
    ref = str(ref)
    if ref in BUILTIN_MODELS:
        return materialise(ref, cache_root(cache_dir))
    local = Path(ref).expanduser()
    if local.exists():
        if not local.is_dir():
            raise LorakitError(f"model {ref} is a file; pass the folder that holds config.json")
        if not (local / "config.json").is_file():
            raise LorakitError(f"model folder {ref} has no config.json; pass a Hugging Face model folder")
        return local
    if is_hub_id(ref):
        sources = (source,) if source else SOURCES
        for s in sources:
            cached = cached_hub_model(ref, s, cache_root(cache_dir))
            if cached is not None:
                return cached
        where = " and ".join(str(hub_dir(ref, s, cache_root(cache_dir))) for s in sources)
        hint = f" --source {source}" if source and source != "hf" else ""
        raise LorakitError(f"model {ref} is not a local folder and is not downloaded (looked in {where}); "
                           f"run `lorakit download {ref}{hint}` first")  # fmt: skip
    raise LorakitError(f"model folder {ref} does not exist (and it is not a built-in: {', '.join(BUILTIN_MODELS)})")


def download(ref: str, source: str = "hf", cache_dir: str | None = None) -> Path:
    """Fetch hub model `ref` from Hugging Face (`source="hf"`) or ModelScope into the cache; return its folder.

    Built-in names are built instead, and local folders are returned as they are.
    """
    ref = str(ref)
    if ref in BUILTIN_MODELS or Path(ref).expanduser().is_dir():
        return resolve_model(ref, source, cache_dir)
    return download_hub_model(ref, source, cache_root(cache_dir))


def load_tokenizer(path):
    """Load the tokenizer of a model folder (or any reference resolve_model accepts); pad token falls back to eos."""
    return load_tokenizer_from(_folder(path))


def load_model(path, dtype: str = "auto", device: str = "cpu", quantize: str = "none"):
    """Load a causal LM from a model folder (or reference) with SDPA attention, in eval mode.

    dtype "auto" is bfloat16 on CUDA and float32 on CPU; quantize "4bit"/"8bit" is QLoRA's frozen base.
    """
    return load_model_from(_folder(path), dtype, device, quantize)


def _folder(path) -> Path:
    # Callers normally pass resolve_model's result; resolving again is a cheap no-op for folders.
    p = Path(path)
    return p if (p / "config.json").is_file() else resolve_model(str(path))
