"""A Hugging Face model folder -> one GGUF file, written with the gguf package (GGUFWriter, TensorNameMap).

Generic: hparams every graph reads, the tokenizer, tensor names and encoding. What differs per family
(architecture, extra keys, weight transforms, refusals) lives in architectures.py. Norms and biases stay
float32 (llama.cpp's own rule); 2-D and 3-D (stacked expert) weights take the quant type.
K-quants are not in the gguf package: the pipeline writes f16 here and quantizes it with llama.cpp's own
quantizer (lorakit.exporting.quantize).
"""

from __future__ import annotations

import json
from pathlib import Path

from lorakit.errors import LorakitError
from lorakit.exporting.architectures import (
    EMBEDDING,
    FAMILIES,
    REQUIRED,
    Family,
    family_refusal,
    head_dimension,
    llama3_rope_freqs,
    rope_parameters,
    rotary_dims,
)
from lorakit.exporting.vocab import GGUFVocab, read_vocab, write_vocab

QUANTS = ("f16", "bf16", "q8_0")  # what the gguf package writes; K-quants: lorakit.exporting.quantize


def model_config(model_dir: Path) -> dict:
    try:
        return json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise LorakitError(f"{model_dir / 'config.json'}: cannot read it ({e})") from None


def check_exportable(model_dir: Path, quant: str) -> dict:
    """Refuse, in one line, what cannot be written correctly; returns the model's config."""
    if quant not in QUANTS:
        raise LorakitError(f"--quant {quant}: choose one of {', '.join(QUANTS)}")
    cfg = model_config(model_dir)
    refusal = export_refusal(cfg)
    if refusal:
        raise LorakitError(f"{model_dir}: {refusal}")
    return cfg


def export_refusal(cfg: dict) -> str | None:
    """Why a model with this config.json cannot be written as GGUF exactly, or None when it can. What
    llama.cpp's graph for the architecture would compute differently is refused, never approximated."""
    return family_refusal(cfg)


def write_gguf(model_dir: Path, out_file: Path, quant: str, name: str) -> GGUFVocab:
    """Write `model_dir` as GGUF to `out_file` (the caller makes that atomic); returns the vocabulary written."""
    cfg = check_exportable(model_dir, quant)
    return _write(model_dir, cfg, out_file, quant, name)


def _write(model_dir: Path, cfg: dict, out_file: Path, quant: str, name: str) -> GGUFVocab:
    import gguf

    from lorakit.exporting.gguf_arrays import GGUFArrayWriter

    family = FAMILIES[cfg["model_type"]]
    arch = getattr(gguf.MODEL_ARCH, family.arch)
    names = gguf.TensorNameMap(arch, int(cfg["num_hidden_layers"]))
    tensors = _gguf_tensors(model_dir, cfg, family, names)
    n_vocab = int(tensors["token_embd.weight"].shape[0])
    vocab = read_vocab(model_dir, n_vocab)

    writer = GGUFArrayWriter(str(out_file), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    _write_hparams(writer, cfg, family, n_vocab)
    write_vocab(writer, vocab)
    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[quant]  # fmt: skip
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for gguf_name, data in tensors.items():
        data, qtype = _encode(data, quant, gguf, keep_f32=gguf_name.endswith(".bias"))
        writer.add_tensor(gguf_name, data, raw_dtype=qtype)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return vocab


def _gguf_tensors(model_dir: Path, cfg: dict, family: Family, names) -> dict:
    """GGUF name -> float32 array, in the layout llama.cpp's graph for the family reads."""
    weights = _read_weights(model_dir)
    if family.tensors:
        weights = family.tensors(weights, cfg)
    tied = cfg.get("tie_word_embeddings", False)
    out = {}
    for hf_name, tensor in weights.items():
        if hf_name.endswith("rotary_emb.inv_freq") or (hf_name == "lm_head.weight" and tied):
            continue  # llama.cpp computes the frequencies and reuses token_embd for a tied head
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise LorakitError(f"{model_dir}: tensor {hf_name} has no GGUF name; this model cannot be exported")
        data = tensor.float().numpy()
        if family.rotary_permute and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = (
                cfg["num_attention_heads"]
                if "q_proj" in hf_name
                else cfg.get("num_key_value_heads", cfg["num_attention_heads"])
            )
            data = interleave_rotary_rows(data, int(heads))
        if family.norm_plus_one and hf_name.endswith("norm.weight"):
            data = data + 1.0  # Gemma's RMSNorm multiplies by (1 + w); llama.cpp's by the stored weight
        out[gguf_name] = data
    if "token_embd.weight" not in out:
        raise LorakitError(f"{model_dir}: no token embedding among the weights; not a supported causal LM layout")
    if family.output == REQUIRED and "output.weight" not in out:
        out["output.weight"] = out["token_embd.weight"]  # this graph needs the head written out even when tied
    if family.output == EMBEDDING:
        out.pop("output.weight", None)  # refused earlier when untied: the graph reads token_embd instead
    if rope_parameters(cfg)["rope_type"] == "llama3":
        out["rope_freqs.weight"] = llama3_rope_freqs(model_dir)
    return out


def _write_hparams(writer, cfg: dict, family: Family, n_vocab: int) -> None:
    heads = int(cfg["num_attention_heads"])
    head_dim = head_dimension(cfg)
    writer.add_context_length(int(cfg["max_position_embeddings"]))
    writer.add_embedding_length(int(cfg["hidden_size"]))
    writer.add_block_count(int(cfg["num_hidden_layers"]))
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(cfg.get("num_key_value_heads") or heads))
    writer.add_rope_freq_base(rope_parameters(cfg)["rope_theta"])
    if not family.layer_norm:
        writer.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    writer.add_vocab_size(n_vocab)
    writer.add_rope_dimension_count(rotary_dims(cfg))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    if family.hparams:
        family.hparams(writer, cfg)


def interleave_rotary_rows(w, n_heads: int):
    """HF stores each head's rotary pairs as (first half, second half); llama.cpp's llama graph rotates
    adjacent rows. Reorder the rows of q/k so the same pairs meet (transformers' GGUF loader undoes this)."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _encode(data, quant: str, gguf, keep_f32: bool = False):
    """(bytes-or-array, quant type) for one tensor: vectors and biases (GPT-OSS's per-expert ones are 2-D)
    stay F32; rows not a multiple of the block size fall back to F16, as llama.cpp's converter does."""
    import numpy as np

    data = np.ascontiguousarray(data, dtype=np.float32)
    if data.ndim < 2 or keep_f32:
        return data, gguf.GGMLQuantizationType.F32
    qtype = {"f16": gguf.GGMLQuantizationType.F16, "bf16": gguf.GGMLQuantizationType.BF16,
             "q8_0": gguf.GGMLQuantizationType.Q8_0}[quant]  # fmt: skip
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if data.shape[-1] % block:
        qtype = gguf.GGMLQuantizationType.F16
    return gguf.quants.quantize(data, qtype), qtype


def _read_weights(model_dir: Path) -> dict:
    """Every tensor of the folder's safetensors files (one file or an index of shards), in file order."""
    from safetensors.torch import load_file

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise LorakitError(f"{model_dir}: no .safetensors weights to export")
    weights = {}
    for f in files:
        weights.update(load_file(str(f)))
    return weights
