"""README.md for merged and exported folders, in the Hugging Face model-card format (YAML front matter).

It records what a reader needs to trust and reuse the model: the base and its licence, the data files
(record counts and sha256), the LoRA settings, steps and final losses, the eval summary when the run has
one, and how to run the folder with transformers, vLLM, llama.cpp and Ollama.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from lorakit.atomic import file_sha256

# Built-ins carry no README of their own; these are the licences of what they are built from.
BUILTIN_LICENCES = {"smollm2-135m-instruct": "apache-2.0", "qwen3-tiny-random": "apache-2.0",
                    "qwen3-0.6b-random": "apache-2.0", "qwen3-4b-random": "apache-2.0"}  # fmt: skip


def build_card(name: str, base_ref: str, base_dir: Path | None, run=None, gguf: dict | None = None) -> str:
    """The card text. `run` is a lorakit.rundir.RunInfo (None for a bare model); `gguf` describes an export:
    {"file": ..., "quant": ..., "modelfile": bool, "quality": Quality or None, and for an adapter export
    "adapter": {"alpha", "pairs", "targets", "base_file", "base_quant"}}."""
    config = getattr(run, "config", None)
    run_dir = getattr(run, "run_dir", None)
    summary = _read_json(run_dir / "run.json") if run_dir else {}
    meta = {"base_model": base_ref, "license": base_licence(base_ref, base_dir),
            "library_name": "gguf" if gguf else "transformers",
            "tags": ["lorakit", "lora", "sft"] + (["gguf"] if gguf else [])}  # fmt: skip
    parts = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip(), "---", "", f"# {name}", ""]
    parts.append(
        f"A LoRA fine-tune of `{base_ref}` made with lorakit" if config else f"`{base_ref}`, packaged by lorakit"
    )
    adapter = (gguf or {}).get("adapter")
    if adapter:
        parts[-1] += ", exported as a llama.cpp LoRA adapter GGUF (float32) to apply over the base's GGUF."
    else:
        parts[-1] += f", exported to GGUF ({gguf['quant']})." if gguf else ", merged into the base weights."
    parts.append("")
    if adapter:
        parts += _base_needed_section(base_ref, adapter)
    if gguf and gguf.get("quality") is not None:
        parts += _quality_section(gguf["quality"])
    if config is not None:
        parts += _training_section(config, summary)
        parts += _eval_section(run_dir)
    parts += _usage_section(name, gguf)
    parts += ["## Licence", "", f"The base model's licence applies: `{meta['license']}`.", ""]
    return "\n".join(parts)


def base_licence(base_ref: str, base_dir: Path | None) -> str:
    if base_ref in BUILTIN_LICENCES:
        return BUILTIN_LICENCES[base_ref]
    readme = base_dir / "README.md" if base_dir else None
    if readme and readme.is_file():
        text = readme.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            try:
                front = yaml.safe_load(text.split("---", 2)[1]) or {}
            except yaml.YAMLError:
                front = {}
            if isinstance(front, dict) and front.get("license"):
                return str(front["license"])
    return "unknown"  # say so rather than guess; the reader must check the base's terms


def data_files(config) -> list[dict]:
    """Each training/eval data file with its record count and sha256 (what was trained on, exactly)."""
    from lorakit.data.readers import Problem, iter_records, resolve_paths
    from lorakit.errors import LorakitError

    paths = [config.data.path] if isinstance(config.data.path, str) else list(config.data.path)
    if config.data.eval_path:
        paths.append(config.data.eval_path)
    try:
        files = resolve_paths(paths)
    except LorakitError:
        return []  # the data moved since training; the card says so below
    out = []
    for f in files:
        records = sum(1 for item in iter_records(f) if not isinstance(item, Problem))
        out.append({"path": str(f), "records": records, "sha256": file_sha256(f) if f.is_file() else None})
    return out


def _training_section(config, summary: dict) -> list[str]:
    lora = config.lora
    lines = ["## Training", "", "| | |", "|---|---|"]
    rows = [("LoRA rank / alpha", f"{lora.r} / {lora.alpha}"), ("target modules", _modules(lora.target_modules)),
            ("dropout", lora.dropout), ("rsLoRA / DoRA", f"{lora.use_rslora} / {lora.use_dora}"),
            ("learning rate", config.train.lr), ("steps", summary.get("steps", "?")),
            ("final train loss", _num(summary.get("final_train_loss"))),
            ("best eval loss", _num(summary.get("best_eval_loss"))), ("thinking", config.data.thinking)]  # fmt: skip
    if config.data.system:
        rows.append(("system prompt", config.data.system.replace("|", "\\|").replace("\n", " ")))
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "### Data", ""]
    files = data_files(config)
    if not files:
        lines.append(f"`{config.data.path}` (not found when this card was written)")
    lines += [f"- `{d['path']}`: {d['records']} records, sha256 `{d['sha256']}`" for d in files]
    return lines + [""]


def _eval_section(run_dir: Path) -> list[str]:
    result = _read_json(run_dir / "eval.json")
    if not result:
        return []
    lines = ["## Evaluation", "", "From `lorakit eval` (base vs fine-tuned):", ""]
    for section in ("loss", "persona", "retention", "judge"):
        value = result.get(section)
        if isinstance(value, dict):
            numbers = {k: v for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if numbers:
                lines.append(f"- {section}: " + ", ".join(f"{k} {_num(v)}" for k, v in numbers.items()))
    return lines + [""]


def _base_needed_section(base_ref: str, adapter: dict) -> list[str]:
    base = adapter["base_file"]
    return ["## Base model needed", "",
            f"This file holds only the LoRA adapter ({adapter['pairs']} weight pairs on "
            f"{', '.join(adapter['targets'])}; alpha {adapter['alpha']:g}). It runs over a GGUF of `{base_ref}`:",
            f"`{base}`{' (in this folder)' if not base.startswith('/') else ''}, {adapter['base_quant']}.",
            "Its tensor names are those `lorakit export` writes for that model; another base fails to load",
            f"(llama.cpp: \"does not exist in base model\"). To make one: `lorakit export {base_ref} --quant q4_k_m "
            "--out BASE_DIR`.", ""]  # fmt: skip


def _quality_section(quality) -> list[str]:
    import math

    return ["## Quantization quality", "",
            f"Measured at export on {quality.tokens} held-out answer tokens from {quality.source}, against the",
            "float32 model (the exported weights dequantized, computed in float32):", "",
            "| top-1 agreement | held-out loss (float32 -> this file) | perplexity |", "|---|---|---|",
            f"| {quality.agreement:.1%} | {quality.loss_fp32:.4f} -> {quality.loss:.4f} ({quality.loss_change:+.4f}) "
            f"| {math.exp(quality.loss_fp32):.3f} -> {math.exp(quality.loss):.3f} |", ""]  # fmt: skip


def _usage_section(name: str, gguf: dict | None) -> list[str]:
    if gguf and gguf.get("adapter"):
        base, file = gguf["adapter"]["base_file"], gguf["file"]
        lines = [
            "## Run it",
            "",
            "llama.cpp (the adapter over its base):",
            "",
            "```bash",
            f"llama-server -m {base} --lora {file} --jinja   # OpenAI-compatible API on :8080",
            f"llama-cli -m {base} --lora {file} --jinja -cnv",
            "```",
            "",
        ]
        if gguf.get("modelfile"):
            lines += ["Ollama (the Modelfile's FROM is the base, ADAPTER this file):", "", "```bash",
                      f"ollama create {name} -f Modelfile", f"ollama run {name}", "```", ""]  # fmt: skip
        return lines
    if gguf:
        file = gguf["file"]
        lines = ["## Run it", "", "llama.cpp:", "", "```bash",
                 f"llama-server -m {file} --jinja   # OpenAI-compatible API on :8080",
                 f"llama-cli -m {file} --jinja -cnv", "```", ""]  # fmt: skip
        if gguf.get("modelfile"):
            lines += ["Ollama (the Modelfile carries the chat template, stop tokens and sampling defaults):", "",
                      "```bash", f"ollama create {name} -f Modelfile", f"ollama run {name}", "```", ""]  # fmt: skip
        lines += ["transformers (dequantizes to float32):", "", "```python",
                  "from transformers import AutoModelForCausalLM, AutoTokenizer",
                  f'model = AutoModelForCausalLM.from_pretrained(".", gguf_file="{file}")',
                  f'tokenizer = AutoTokenizer.from_pretrained(".", gguf_file="{file}")', "```", ""]  # fmt: skip
        return lines
    return [
        "## Run it",
        "",
        "transformers:",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        'model = AutoModelForCausalLM.from_pretrained("PATH/TO/THIS/FOLDER")',
        'tokenizer = AutoTokenizer.from_pretrained("PATH/TO/THIS/FOLDER")',
        "```",
        "",
        "vLLM (GPU) or lorakit's own server:",
        "",
        "```bash",
        "vllm serve PATH/TO/THIS/FOLDER",
        "lorakit serve --model PATH/TO/THIS/FOLDER",
        "```",
        "",
        "llama.cpp and Ollama: export to GGUF first (writes a Modelfile too):",
        "",
        "```bash",
        "lorakit export PATH/TO/THIS/FOLDER --format gguf --out OUT --quant q8_0",
        "lorakit serve --engine llama.cpp --model OUT",
        "ollama create NAME -f OUT/Modelfile",
        "```",
        "",
    ]


def _modules(target) -> str:
    return target if isinstance(target, str) else ", ".join(target)


def _num(v) -> str:
    return "n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def carried_sections(model_dir: Path) -> str:
    """The Training and Evaluation sections of a lorakit card already in `model_dir` (a merged folder),
    so a folder exported from it keeps the record; empty when there is none."""
    readme = model_dir / "README.md"
    text = readme.read_text(encoding="utf-8", errors="replace") if readme.is_file() else ""
    start, end = text.find("## Training"), text.find("## Run it")
    return text[start:end] if "lorakit" in text[:400] and 0 <= start < end else ""
