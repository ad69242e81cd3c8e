"""`lorakit export`: a run, merged folder or model reference -> OUT/ with the GGUF, a Modelfile and README.md.

Cheap checks (format, quant, --out, the K-quant library) run before any model is loaded; a run is merged
into a temporary folder first, in float32 so the only rounding is the quantisation. OUT appears complete
or not at all. After writing, the quant is measured against float32 on held-out answers (quality.py).
--format gguf-lora (adapter_export.py) writes the adapter alone instead of a merged model.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import tempfile
import time
from pathlib import Path

from lorakit.atomic import atomic_dir
from lorakit.errors import LorakitError
from lorakit.exporting import quantize as kquant
from lorakit.exporting.gguf_writer import QUANTS as WRITER_QUANTS
from lorakit.exporting.gguf_writer import check_exportable, write_gguf
from lorakit.exporting.quality import DEFAULT_TOKENS

FORMATS = ("gguf", "gguf-lora")
QUANTS = WRITER_QUANTS + tuple(kquant.K_QUANTS)


def export_model(source: str | Path, out: str | Path, fmt: str = "gguf", quant: str = "q8_0",
                 overwrite: bool = False, base_gguf: str | Path | None = None,
                 quality_tokens: int = DEFAULT_TOKENS) -> Path:
    """Export SOURCE (run directory, merged folder or model reference) to folder `out`; returns `out`.

    fmt "gguf-lora" writes the run's adapter alone, for `base_gguf` (a lorakit GGUF export of the same
    base) or, without it, beside the base exported at `quant`. `quality_tokens` held-out answer tokens
    measure the quant against float32 (0: skip)."""
    if fmt not in FORMATS:
        raise LorakitError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if quant not in QUANTS:
        raise LorakitError(f"--quant {quant}: choose one of {', '.join(QUANTS)}")
    if base_gguf is not None and fmt != "gguf-lora":
        raise LorakitError("--base-gguf: only with --format gguf-lora (the adapter needs a base; a merged export has one)")
    if quality_tokens < 0:
        raise LorakitError(f"--quality-tokens {quality_tokens}: give 0 (skip) or more")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LorakitError(f"--out {out}: is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise LorakitError(f"--out {out}: already exists and is not empty; pass --overwrite or choose another --out")
    from lorakit.rundir import check_output_dir, mark_output, overlapping

    check_output_dir(out, "--out", overwrite)  # --overwrite replaces only a folder lorakit wrote
    if overlapping(out, Path(source).expanduser()):
        raise LorakitError(f"--out {out}: is, holds or lies inside the source {source}; choose a separate folder")
    needs_quantizer = quant in kquant.K_QUANTS and not (fmt == "gguf-lora" and base_gguf is not None)
    quantizer = kquant.find_quantizer() if needs_quantizer else None  # refuses before anything is written
    if fmt == "gguf-lora":
        from lorakit.exporting.adapter_export import export_adapter

        return export_adapter(str(source), out, quant, quantizer, base_gguf, quality_tokens)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lorakit-export-") as scratch:
        model_dir, base_ref, run = _resolve_source(str(source), Path(scratch), quant)
        check_exportable(model_dir, _written_quant(quant))  # before writing anything
        name = _slug(out.name)
        gguf_name = f"{name}-{quant}.gguf"
        with atomic_dir(out, overwrite=True) as tmp:  # an existing folder here is empty or --overwrite
            vocab = write_model_gguf(model_dir, tmp / gguf_name, quant, name, quantizer)
            written = time.perf_counter() - started
            has_modelfile = _write_modelfile(model_dir, tmp, gguf_name, vocab, run)  # may refuse: before measuring
            quality = measure_quality(model_dir, run, tmp / gguf_name, quant, quality_tokens)
            _write_card(tmp, name, base_ref, model_dir, run, {"file": gguf_name, "quant": quant,
                                                              "modelfile": has_modelfile, "quality": quality})
            mark_output(tmp, "export")
    size = (out / gguf_name).stat().st_size / 1e6
    print(f"exported {out / gguf_name} ({quant}, {size:.1f} MB) in {written:.0f} s")
    if quality is not None:
        print(quality.line())
    if has_modelfile:
        print(f"ollama:    cd {out} && ollama create {name} -f Modelfile && ollama run {name}")
    print(f"llama.cpp: lorakit serve --engine llama.cpp --model {out}")
    return out


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


def _resolve_source(source: str, scratch: Path, quant: str):
    """(model folder, base model reference, RunInfo or None) for a run, merged folder or model reference."""
    from lorakit.models import BUILTIN_MODELS, resolve_model
    from lorakit.rundir import open_run

    path = Path(source).expanduser()
    if source not in BUILTIN_MODELS and path.is_dir() and not (path / "config.json").is_file():
        run = open_run(path)  # a run directory or adapter folder; its errors are the precise ones
        from lorakit.exporting.merge import merge

        source_hub = run.config.model.source if run.config else "hf"
        check_exportable(resolve_model(run.base_model, source_hub), _written_quant(quant))  # refuse before the merge
        print(f"merging {path} into a temporary folder (float32) ...", flush=True)
        with contextlib.redirect_stdout(io.StringIO()):  # its "written to <temp dir>" would mislead
            merged = merge(path, scratch / "merged", dtype="float32")
        return merged, run.base_model, run
    if source not in BUILTIN_MODELS and not path.exists() and ("/" not in source or source.startswith((".", "/"))):
        raise LorakitError(f"{source}: no such run directory, model folder or built-in model "
                           f"(built-ins: {', '.join(BUILTIN_MODELS)})")  # fmt: skip
    model_dir = resolve_model(source)
    base_ref = _card_base(model_dir) or source
    return model_dir, base_ref, None


def _write_modelfile(model_dir: Path, out: Path, gguf_name: str, vocab, run, adapter: str | None = None) -> bool:
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


def _write_card(out: Path, name: str, base_ref: str, model_dir: Path, run, gguf: dict | None) -> None:
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


def _card_base(model_dir: Path) -> str | None:
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


def _written_quant(quant: str) -> str:
    """What the gguf package writes for `quant`: a K-quant starts as f16."""
    return "f16" if quant in kquant.K_QUANTS else quant


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"
