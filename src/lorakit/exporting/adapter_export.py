"""`lorakit export RUN --format gguf-lora`: OUT/ with the adapter as a llama.cpp LoRA GGUF, the base it needs,
an Ollama Modelfile (FROM base, ADAPTER adapter) and a model card naming that base.

The base GGUF comes from one of two places:
- `--base-gguf FILE`: a GGUF that `lorakit export` wrote for the run's base model (any --quant). It is
  checked (architecture, size, every adapted tensor present) and referred to by absolute path, not copied:
  one base on disk serves every persona fine-tuned from it.
- otherwise the base is exported into OUT beside the adapter, at --quant, so the folder is complete.
"""

from __future__ import annotations

import time
from pathlib import Path

from lorakit.atomic import atomic_dir
from lorakit.errors import LorakitError


def export_adapter(source: str, out: Path, quant: str, quantizer, base_gguf, quality_tokens: int) -> Path:
    from lorakit.exporting.adapter_gguf import check_adapter, check_base_gguf, write_adapter_gguf
    from lorakit.exporting.gguf_writer import check_exportable
    from lorakit.exporting.outputs import measure_quality, slug, write_card, write_modelfile, written_quant
    from lorakit.models import resolve_model
    from lorakit.rundir import check_adapter as check_weights
    from lorakit.rundir import mark_output, open_run

    path = Path(source).expanduser()
    if not path.is_dir() or (path / "config.json").is_file():
        raise LorakitError(f"{source}: --format gguf-lora writes a run's adapter; give a run directory or "
                           "adapter folder (a merged or bare model has none: use --format gguf)")  # fmt: skip
    started = time.perf_counter()
    run = open_run(path)
    check_adapter(run.adapter_dir)  # what llama.cpp's adapter GGUF can hold
    check_weights(run.adapter_dir)  # present and finite
    base_dir = resolve_model(run.base_model, run.config.model.source if run.config else "hf")
    base_config = check_exportable(base_dir, written_quant(quant))
    if base_gguf is not None:
        base_gguf = Path(base_gguf).expanduser().resolve()
        check_base_gguf(base_gguf, base_config, run.adapter_dir)
    name = slug(out.name)
    adapter_name = f"{name}-lora.gguf"
    with atomic_dir(out, overwrite=True) as tmp:
        info = write_adapter_gguf(run.adapter_dir, base_config, tmp / adapter_name, name)
        vocab, base_file, base_label = _base(base_dir, base_config, run, tmp, quant, quantizer, base_gguf)
        written = time.perf_counter() - started
        from_ref = str(base_file) if base_gguf is not None else base_file.name
        has_modelfile = write_modelfile(base_dir, tmp, from_ref, vocab, run, adapter=adapter_name)
        quality = measure_quality(base_dir, run, base_file, base_label, quality_tokens, run.adapter_dir)
        write_card(tmp, name, run.base_model, base_dir, run,
                    {"file": adapter_name, "quant": "f32 LoRA", "modelfile": has_modelfile, "quality": quality,
                     "adapter": {**info, "base_file": from_ref, "base_quant": base_label}})  # fmt: skip
        mark_output(tmp, "export")
    size = (out / adapter_name).stat().st_size / 1e6
    print(f"exported {out / adapter_name} (LoRA adapter, {info['pairs']} weight pairs, {size:.1f} MB) for the base "
          f"{from_ref if base_gguf is not None else out / from_ref} in {written:.0f} s")  # fmt: skip
    if quality is not None:
        print(quality.line())
    if has_modelfile:
        print(f"ollama:    cd {out} && ollama create {name} -f Modelfile && ollama run {name}")
    base_arg = from_ref if base_gguf is not None else out / from_ref
    print(f"llama.cpp: llama-server -m {base_arg} --lora {out / adapter_name} --jinja")
    return out


def _base(base_dir: Path, base_config: dict, run, tmp: Path, quant: str, quantizer, base_gguf: Path | None):
    """(vocabulary, base GGUF path, its label): the given --base-gguf, or the base exported into OUT."""
    from lorakit.exporting.outputs import slug, write_model_gguf
    from lorakit.exporting.vocab import read_vocab

    if base_gguf is not None:
        return read_vocab(base_dir, _vocab_rows(base_dir)), base_gguf, f"base {base_gguf.name}"
    base_name = slug(Path(str(run.base_model)).name)
    file = tmp / f"{base_name}-{quant}.gguf"
    print(f"exporting the base {run.base_model} ({quant}) beside the adapter ...", flush=True)
    return write_model_gguf(base_dir, file, quant, base_name, quantizer), file, quant


def _vocab_rows(model_dir: Path) -> int:
    """Rows of the embedding matrix (the vocabulary size the base GGUF was written with)."""
    from safetensors import safe_open

    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            if "model.embed_tokens.weight" in st.keys():
                return int(st.get_slice("model.embed_tokens.weight").get_shape()[0])
    raise LorakitError(f"{model_dir}: no model.embed_tokens.weight")
