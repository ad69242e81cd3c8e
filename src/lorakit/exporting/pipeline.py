"""`lorakit export`: a run, merged folder or model reference -> OUT/ with the GGUF, a Modelfile and README.md.

Cheap checks (format, quant, --out, the K-quant library) run before any model is loaded; a run is merged
into a temporary folder first, in float32 so the only rounding is the quantisation. OUT appears complete
or not at all. After writing, the quant is measured against float32 on held-out answers (quality.py).
--format gguf-lora (adapter_export.py) writes the adapter alone instead of a merged model.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from pathlib import Path

from lorakit.atomic import atomic_dir
from lorakit.errors import LorakitError
from lorakit.exporting import quantize as kquant
from lorakit.exporting.gguf_writer import QUANTS as WRITER_QUANTS
from lorakit.exporting.gguf_writer import check_exportable
from lorakit.exporting.outputs import (
    card_base,
    measure_quality,
    slug,
    write_card,
    write_model_gguf,
    write_modelfile,
    written_quant,
)
from lorakit.exporting.quality import DEFAULT_TOKENS

FORMATS = ("gguf", "gguf-lora")
QUANTS = WRITER_QUANTS + tuple(kquant.K_QUANTS)


def export_model(
    source: str | Path,
    out: str | Path,
    fmt: str = "gguf",
    quant: str = "q8_0",
    overwrite: bool = False,
    base_gguf: str | Path | None = None,
    quality_tokens: int = DEFAULT_TOKENS,
) -> Path:
    """Export SOURCE (run directory, merged folder or model reference) to folder `out`; returns `out`.

    fmt "gguf-lora" writes the run's adapter alone, for `base_gguf` (a lorakit GGUF export of the same
    base) or, without it, beside the base exported at `quant`. `quality_tokens` held-out answer tokens
    measure the quant against float32 (0: skip)."""
    if fmt not in FORMATS:
        raise LorakitError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if quant not in QUANTS:
        raise LorakitError(f"--quant {quant}: choose one of {', '.join(QUANTS)}")
    if base_gguf is not None and fmt != "gguf-lora":
        raise LorakitError(
            "--base-gguf: only with --format gguf-lora (the adapter needs a base; a merged export has one)"
        )
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
        check_exportable(model_dir, written_quant(quant))  # before writing anything
        name = slug(out.name)
        gguf_name = f"{name}-{quant}.gguf"
        with atomic_dir(out, overwrite=True) as tmp:  # an existing folder here is empty or --overwrite
            vocab = write_model_gguf(model_dir, tmp / gguf_name, quant, name, quantizer)
            written = time.perf_counter() - started
            has_modelfile = write_modelfile(model_dir, tmp, gguf_name, vocab, run)  # may refuse: before measuring
            quality = measure_quality(model_dir, run, tmp / gguf_name, quant, quality_tokens)
            write_card(
                tmp,
                name,
                base_ref,
                model_dir,
                run,
                {"file": gguf_name, "quant": quant, "modelfile": has_modelfile, "quality": quality},
            )
            mark_output(tmp, "export")
    size = (out / gguf_name).stat().st_size / 1e6
    print(f"exported {out / gguf_name} ({quant}, {size:.1f} MB) in {written:.0f} s")
    if quality is not None:
        print(quality.line())
    if has_modelfile:
        print(f"ollama:    cd {out} && ollama create {name} -f Modelfile && ollama run {name}")
    print(f"llama.cpp: lorakit serve --engine llama.cpp --model {out}")
    return out


def _resolve_source(source: str, scratch: Path, quant: str):
    """(model folder, base model reference, RunInfo or None) for a run, merged folder or model reference."""
    from lorakit.models import BUILTIN_MODELS, resolve_model
    from lorakit.rundir import open_run

    path = Path(source).expanduser()
    if source not in BUILTIN_MODELS and path.is_dir() and not (path / "config.json").is_file():
        run = open_run(path)  # a run directory or adapter folder; its errors are the precise ones
        from lorakit.exporting.merge import merge

        source_hub = run.config.model.source if run.config else "hf"
        check_exportable(resolve_model(run.base_model, source_hub), written_quant(quant))  # refuse before the merge
        print(f"merging {path} into a temporary folder (float32) ...", flush=True)
        with contextlib.redirect_stdout(io.StringIO()):  # its "written to <temp dir>" would mislead
            merged = merge(path, scratch / "merged", dtype="float32")
        return merged, run.base_model, run
    if source not in BUILTIN_MODELS and not path.exists() and ("/" not in source or source.startswith((".", "/"))):
        raise LorakitError(f"{source}: no such run directory, model folder or built-in model "
                           f"(built-ins: {', '.join(BUILTIN_MODELS)})")  # fmt: skip
    model_dir = resolve_model(source)
    base_ref = card_base(model_dir) or source
    return model_dir, base_ref, None
