"""A run's LoRA adapter alone as a llama.cpp LoRA GGUF (what `llama-server --lora` and Ollama's ADAPTER load).

The layout is the one llama.cpp's convert_lora_to_gguf.py writes and src/llama-adapter.cpp reads:
general.type "adapter", adapter.type "lora", adapter.lora.alpha, and per adapted weight a pair
`<base tensor name>.lora_a` (PEFT's A, r x in) and `.lora_b` (PEFT's B, out x r). llama.cpp scales each
pair by alpha / r with r read off lora_b. The base tensor names come from the same TensorNameMap as
lorakit's base GGUF, and B gets the same row reorder as the weight it adapts (Llama's rotary q/k rows,
GPT-NeoX's per-head qkv), so the adapter fits the file lorakit exports for every exported family. Fused
projections (Phi-3's qkv_proj and gate_up_proj, GPT-NeoX's query_key_value) are one tensor in llama.cpp's
graph too, so their pair applies to it as it is. Gemma's (1 + w) is on norms, which LoRA never adapts.

What llama.cpp's adapter cannot hold is refused in one line: DoRA's magnitude vectors, trained biases,
fully trained modules (modules_to_save), adapters on the embeddings, on a tied output or on MoE experts
(llama.cpp's base GGUF stacks each layer's experts into one tensor). Per-module scales
that differ from alpha / r (rsLoRA, alpha_pattern) are folded into B, which is exact.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from lorakit.errors import LorakitError
from lorakit.exporting.gguf_writer import FAMILIES, interleave_rotary_rows

ADAPTER_SUFFIXES = (".lora_A.weight", ".lora_B.weight")


def adapter_config(adapter_dir: Path) -> dict:
    path = adapter_dir / "adapter_config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LorakitError(f"{path}: cannot read it ({e})") from None


def check_adapter(adapter_dir: Path) -> dict:
    """Refuse, in one line, an adapter llama.cpp's LoRA GGUF cannot represent; returns its config."""
    cfg = adapter_config(adapter_dir)
    where = adapter_dir / "adapter_config.json"
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise LorakitError(f"{where}: peft_type {cfg.get('peft_type')}: llama.cpp's adapter GGUF holds LoRA only")
    if cfg.get("use_dora"):
        raise LorakitError(f"{where}: use_dora: llama.cpp's LoRA GGUF has no DoRA magnitude vectors; "
                           "export the merged model (--format gguf) instead")  # fmt: skip
    if cfg.get("bias", "none") != "none":
        raise LorakitError(f"{where}: bias {cfg['bias']!r}: llama.cpp's LoRA GGUF has no trained biases; "
                           "export the merged model (--format gguf) instead")  # fmt: skip
    if cfg.get("modules_to_save"):
        raise LorakitError(f"{where}: modules_to_save {cfg['modules_to_save']}: fully trained modules are not "
                           "LoRA pairs; export the merged model (--format gguf) instead")  # fmt: skip
    return cfg


def _scale(cfg: dict, module: str, rank: int) -> float:
    """PEFT's scaling for `module` (alpha / r, rsLoRA's alpha / sqrt(r), alpha_pattern overrides)."""
    alpha = float(cfg.get("lora_alpha", 8))
    for key, value in (cfg.get("alpha_pattern") or {}).items():
        if module == key or module.endswith("." + key):
            alpha = float(value)
    return alpha / math.sqrt(rank) if cfg.get("use_rslora") else alpha / rank


def write_adapter_gguf(adapter_dir: Path, base_config: dict, out_file: Path, name: str) -> dict:
    """Write the adapter of `adapter_dir` for the base model with config.json `base_config`; returns
    {"alpha", "pairs", "targets"}. The caller makes the write atomic."""
    import gguf
    import numpy as np
    from safetensors.torch import load_file

    cfg = check_adapter(adapter_dir)
    family = FAMILIES[base_config["model_type"]]  # an exportable base (check_exportable ran before)
    arch = getattr(gguf.MODEL_ARCH, family.arch)
    names = gguf.TensorNameMap(arch, int(base_config["num_hidden_layers"]))
    weights_file = adapter_dir / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise LorakitError(f"{adapter_dir}: no adapter_model.safetensors")
    pairs: dict[str, dict] = {}
    for key, tensor in load_file(str(weights_file)).items():
        if "lora_magnitude_vector" in key:
            raise LorakitError(f"{weights_file}: {key}: DoRA magnitudes cannot go into llama.cpp's LoRA GGUF")
        if "lora_embedding" in key or not key.endswith(ADAPTER_SUFFIXES):
            raise LorakitError(f"{weights_file}: {key}: not a LoRA A/B pair of a linear layer; llama.cpp's LoRA "
                               "GGUF cannot hold it; export the merged model (--format gguf) instead")  # fmt: skip
        module = key.removeprefix("base_model.model.").rsplit(".lora_", 1)[0]
        pairs.setdefault(module, {})["A" if ".lora_A." in key else "B"] = tensor.float().numpy()

    alpha = float(cfg.get("lora_alpha", 8))
    tied = base_config.get("tie_word_embeddings", False)
    writer = gguf.GGUFWriter(str(out_file), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    targets = set()
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise LorakitError(f"{weights_file}: {module} has lora_{'B' if 'A' in ab else 'A'} missing")
        if module == "lm_head" and tied:
            raise LorakitError(
                f"{weights_file}: an adapter on lm_head of a model with tied embeddings has no "
                "output.weight to apply to in the base GGUF; export the merged model instead"
            )
        if ".mlp.experts" in module:
            raise LorakitError(
                f"{weights_file}: {module}: LoRA on MoE experts cannot go into llama.cpp's LoRA GGUF (the base "
                "GGUF stacks each layer's experts into one tensor); export the merged model (--format gguf) instead"
            )
        base_name = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if base_name is None:
            raise LorakitError(f"{weights_file}: {module} has no tensor in the base GGUF; llama.cpp cannot apply it")
        a, b = ab["A"], ab["B"]
        rank = a.shape[0]
        # llama.cpp multiplies by alpha / rank; anything else PEFT would use is folded into B
        b = b * np.float32(_scale(cfg, module, rank) / (alpha / rank))
        b = _as_exported_rows(b, module, family, base_config)
        writer.add_tensor(base_name + ".lora_a", np.ascontiguousarray(a, dtype=np.float32))
        writer.add_tensor(base_name + ".lora_b", np.ascontiguousarray(b, dtype=np.float32))
        targets.add(module.rsplit(".", 1)[-1])
    if not pairs:
        raise LorakitError(f"{weights_file}: holds no LoRA pairs")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"alpha": alpha, "pairs": len(pairs), "targets": sorted(targets)}


def _as_exported_rows(b, module: str, family, base_config: dict):
    """B's rows are the adapted weight's output rows: reorder them as the base export reorders that weight's."""
    if family.rotary_permute and module.endswith(("q_proj", "k_proj")):
        heads = (
            base_config["num_attention_heads"]
            if module.endswith("q_proj")
            else base_config.get("num_key_value_heads", base_config["num_attention_heads"])
        )
        b = interleave_rotary_rows(b, int(heads))
    if family.tensors is not None:
        # the family's own weight transforms (GPT-NeoX's qkv regrouping) act on rows; experts, which they
        # stack, were refused above, so B passes through them under its weight's name
        import torch

        weight = module + ".weight"
        b = family.tensors({weight: torch.from_numpy(b)}, base_config)[weight].numpy()
    return b


def check_base_gguf(base_gguf: Path, base_config: dict, adapter_dir: Path) -> None:
    """--base-gguf must be a model GGUF of the same architecture and shape as the run's base, holding every
    tensor the adapter adapts (checked on the header: no weights are read)."""
    import gguf

    if not base_gguf.is_file():
        raise LorakitError(f"--base-gguf {base_gguf}: no such file")
    try:
        reader = gguf.GGUFReader(str(base_gguf))
    except Exception as e:  # noqa: BLE001 - any parse failure means "not a GGUF we can use"
        raise LorakitError(f"--base-gguf {base_gguf}: not a readable GGUF ({e})") from None

    def field(key):
        f = reader.fields.get(key)
        return f.contents() if f is not None else None

    arch = gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, FAMILIES[base_config["model_type"]].arch)]
    if field("general.type") not in (None, "model") or field("general.architecture") != arch:
        raise LorakitError(f"--base-gguf {base_gguf}: a {field('general.architecture')} "
                           f"{field('general.type') or 'model'}, not a {arch} model like the run's base")  # fmt: skip
    for key, want in ((f"{arch}.block_count", "num_hidden_layers"), (f"{arch}.embedding_length", "hidden_size")):
        if field(key) != int(base_config[want]):
            raise LorakitError(f"--base-gguf {base_gguf}: {key} is {field(key)}, the run's base has "
                               f"{want} {base_config[want]}; it is another model")  # fmt: skip
    present = {t.name for t in reader.tensors}
    names = gguf.TensorNameMap(getattr(gguf.MODEL_ARCH, FAMILIES[base_config["model_type"]].arch),
                               int(base_config["num_hidden_layers"]))  # fmt: skip
    from safetensors import safe_open

    with safe_open(str(adapter_dir / "adapter_model.safetensors"), "pt") as f:
        modules = {k.removeprefix("base_model.model.").rsplit(".lora_", 1)[0] for k in f.keys() if ".lora_" in k}
    for module in sorted(modules):
        name = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if name not in present:
            raise LorakitError(f"--base-gguf {base_gguf}: has no {name} for the adapter's {module}")
