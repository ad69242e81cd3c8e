"""The merge stage: fold a LoRA adapter into its base weights and save a plain Hugging Face model
that loads with AutoModelForCausalLM and vLLM unchanged."""

from __future__ import annotations

import json
from pathlib import Path

from lorakit.atomic import atomic_dir
from lorakit.errors import LorakitError
from lorakit.exporting.model_card import build_card
from lorakit.models.lora import peft_quietly
from lorakit.rundir import check_adapter, check_output_dir, mark_output, open_run, overlapping


def merge(run_dir: str | Path, out: str | Path, dtype: str = "auto", overwrite: bool = False) -> Path:
    """Merge RUN_DIR's adapter into its base model and write the result to `out` atomically."""
    run = open_run(run_dir)
    out = Path(out)
    for name, given in (("the run", run_dir), ("its adapter", run.adapter_dir)):
        if overlapping(out, given):
            raise LorakitError(f"--out {out}: is, holds or lies inside {name} {given}; choose a separate folder")
    if out.exists() and not overwrite:
        raise LorakitError(f"{out}: already exists; pass --overwrite or choose another --out")
    check_output_dir(out, "--out", overwrite)
    check_adapter(run.adapter_dir)
    if dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise LorakitError(f"--dtype {dtype}: use auto, float32, bfloat16 or float16")
    from lorakit.models import load_model, load_tokenizer, resolve_model
    from lorakit.models.template_override import use_adapter_template

    source = run.config.model.source if run.config else "hf"
    cache = run.config.model.cache_dir if run.config else None
    base_path = resolve_model(run.base_model, source, cache)
    if overlapping(out, base_path):
        raise LorakitError(
            f"--out {out}: is, holds or lies inside the base model {base_path}; choose a separate folder"
        )
    if dtype == "auto":
        dtype = _saved_dtype(base_path)
    if dtype not in ("float32", "bfloat16", "float16"):
        raise LorakitError(f"--dtype {dtype}: use auto, float32, bfloat16 or float16")
    import torch  # torch and peft (seconds to import) only once every argument has been checked
    from peft import PeftModel

    # Merge in float32 so the rounding happens once, at the final cast.
    base = load_model(base_path, dtype="float32", device="cpu")
    with peft_quietly():
        model = PeftModel.from_pretrained(base, str(run.adapter_dir))
    merged = model.merge_and_unload()
    merged = merged.to(getattr(torch, dtype))
    merged.config.dtype = getattr(torch, dtype)
    # training changes no token, only the chat template when model.chat_template replaced it
    tokenizer = use_adapter_template(load_tokenizer(base_path), [run.adapter_dir])
    with atomic_dir(out, overwrite=overwrite) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        gen = base_path / "generation_config.json"
        if gen.exists():
            (tmp / "generation_config.json").write_text(gen.read_text())
        (tmp / "README.md").write_text(build_card(out.name, run.base_model, base_path, run), encoding="utf-8")
        mark_output(tmp, "merged model")
    print(f"merged model written to {out} ({dtype})")
    return out


def _saved_dtype(model_path: Path) -> str:
    cfg = json.loads((Path(model_path) / "config.json").read_text())
    d = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
    return d if d in ("float32", "bfloat16", "float16") else "float32"
