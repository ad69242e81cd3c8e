"""Hub models: explicit downloads (Hugging Face or ModelScope) into lorakit's cache, and offline lookup.

Downloads go to `<cache>/hub/<source>/<org>/<name>/`; a marker file is written only after a download
finished, so an interrupted download is never mistaken for a usable model.
"""

from __future__ import annotations

import re
from pathlib import Path

from lorakit.atomic import write_json
from lorakit.errors import LorakitError

SOURCES = ("hf", "modelscope")
_MARKER = ".lorakit-download.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def is_hub_id(ref: str) -> bool:
    """True for an `org/name` reference (exactly one slash, no path-like prefix)."""
    return bool(_HUB_ID.match(ref)) and ".." not in ref


def hub_dir(ref: str, source: str, cache: Path) -> Path:
    """Where hub model `ref` from `source` lives inside the cache."""
    _check_source(source)
    org, name = ref.split("/")
    return cache / "hub" / source / org / name


def cached_hub_model(ref: str, source: str, cache: Path) -> Path | None:
    """The cached folder of a fully downloaded hub model, or None."""
    folder = hub_dir(ref, source, cache)
    return folder if (folder / _MARKER).is_file() and (folder / "config.json").is_file() else None


def download_hub_model(ref: str, source: str, cache: Path) -> Path:
    """Download `ref` from `source` into the cache (resuming a partial download) and return its folder."""
    if not is_hub_id(ref):
        raise LorakitError(f"{ref!r} is not a hub id; expected the form org/name, e.g. Qwen/Qwen3-0.6B")
    folder = hub_dir(ref, source, cache)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if source == "hf":
            from huggingface_hub import snapshot_download
        else:
            try:
                from modelscope import snapshot_download
            except ImportError:
                from lorakit.install import install_command

                msg = f"source modelscope needs the modelscope package: {install_command('modelscope', 'install')}"
                raise LorakitError(msg) from None
        snapshot_download(ref, local_dir=str(folder))
    except LorakitError:
        raise
    except Exception as e:  # network, auth and not-found errors all arrive as different types
        first_line = (str(e).strip().splitlines() or [""])[0]
        raise LorakitError(f"could not download {ref} from {source}: {type(e).__name__}: {first_line}") from None
    if not (folder / "config.json").is_file():
        raise LorakitError(f"downloaded {ref} from {source} but it has no config.json; is it a transformers model?")
    write_json(folder / _MARKER, {"id": ref, "source": source})
    return folder


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise LorakitError(f"unknown model source {source!r}; choose one of: {', '.join(SOURCES)}")
