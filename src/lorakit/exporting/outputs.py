"""What every export writes, whatever its source and format: a model GGUF at a quant, the Ollama Modelfile,
the model card, and the quant's quality line. The pipeline (a merged model) and adapter_export (a LoRA
GGUF) both call these; neither imports the other's module.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from lorakit.errors import LorakitError
from lorakit.exporting import quantize as kquant
from lorakit.exporting.gguf_writer import write_gguf


def write_model_gguf(model_dir: Path, out_file: Path, quant: str, name: str, quantizer=None):
    """One model GGUF at `quant`: the gguf package writes f16/bf16/q8_0; a K-quant is that f16 file
    quantized by llama.cpp (the f16 file is a temporary beside `out_file`). Returns the vocabulary."""
    if quant not in kquant.K_QUANTS:
        return write_gguf(model_dir, out_file, quant, name)
    f16 = out_file.with_name(f".{out_file.stem}.f16.gguf")
    try:
        vocab = write_gguf(model_dir, f16, "f16", name)
        kquant.quantize(quantizer, f16, out_file, quant)
    finally:
        f16.unlink(missing_ok=True)
    return vocab


def measure_quality(model_dir: Path, run, gguf_file: Path, quant: str, tokens: int, adapter_dir: Path | None = None):
    """The quant's Quality on held-out answers (None when tokens is 0)."""
    if not tokens:
        return None
    from lorakit.exporting.quality import measure, reference

    print(f"measuring {quant} against float32 on up to {tokens} held-out answer tokens ...", flush=True)
    ref = reference(model_dir, run, tokens, adapter_dir)
    return measure(gguf_file, model_dir, ref, quant, adapter_dir)


def write_modelfile(model_dir: Path, out: Path, gguf_name: str, vocab, run, adapter: str | None = None) -> bool:
    from transformers import AutoTokenizer

    from lorakit.atomic import write_text
    from lorakit.exporting.modelfile import build_modelfile

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    stops = vocab.stop_tokens() + _generation_stops(model_dir, vocab.tokens)
    system = run.config.data.system if run is not None and run.config is not None else None
    text = build_modelfile(tok, gguf_name, list(dict.fromkeys(stops)), system, adapter)
    if text is None:
        print("note: no Modelfile written: the chat template is not ChatML, and lorakit only writes an Ollama "
              "TEMPLATE it has checked renders the same prompt", file=sys.stderr)  # fmt: skip
        return False
    write_text(out / "Modelfile", text)
    return True


def write_card(out: Path, name: str, base_ref: str, model_dir: Path, run, gguf: dict | None) -> None:
    from lorakit.atomic import write_text
    from lorakit.exporting.model_card import build_card, carried_sections

    card = build_card(name, base_ref, _base_dir(base_ref), run, gguf)
    if run is None:  # a merged folder: keep the training and eval record its card already holds
        card = card.replace("## Run it", carried_sections(model_dir) + "## Run it", 1)
    write_text(out / "README.md", card)


def _generation_stops(model_dir: Path, tokens: list[str]) -> list[str]:
    """generation_config's eos ids (Qwen stops on <|im_end|> and <|endoftext|>) as token texts."""
    import json

    try:
        ids = json.loads((model_dir / "generation_config.json").read_text(encoding="utf-8")).get("eos_token_id")
    except (OSError, ValueError):
        return []
    ids = ids if isinstance(ids, list) else [ids]
    return [tokens[i] for i in ids if isinstance(i, int) and 0 <= i < len(tokens)]


def card_base(model_dir: Path) -> str | None:
    """The base_model a lorakit card in `model_dir` names (a merged folder), else None."""
    import yaml

    readme = model_dir / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    try:
        front = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return None
    return front.get("base_model") if isinstance(front, dict) else None


def _base_dir(base_ref: str) -> Path | None:
    from lorakit.models import resolve_model

    try:
        return resolve_model(base_ref)
    except LorakitError:
        return None


def written_quant(quant: str) -> str:
    """What the gguf package writes for `quant`: a K-quant starts as f16."""
    return "f16" if quant in kquant.K_QUANTS else quant


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"
