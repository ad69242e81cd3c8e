"""`lorakit serve --engine vllm`: build the `vllm serve` command and check what vLLM would reject.

vLLM fails late (after minutes of loading on a GPU) on adapters it cannot take, so the checks run
first and each problem is reported in one line.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import typer

from lorakit.errors import LorakitError

VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM accepts for --max-lora-rank
# vLLM registers /v1/load_lora_adapter and /v1/unload_lora_adapter only with this set to 1 or true; the
# built-in server follows the same switch (serve/lora_runtime.py)
RUNTIME_LORA_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"
RUNTIME_LORA_RANK = 64  # --max-lora-rank when adapters come at runtime and none is given: lora.r up to 64


def runtime_lora_allowed(flag: bool = False) -> bool:
    """`--allow-runtime-lora`, or the variable as vLLM reads it ("1" or "true", any case)."""
    return flag or os.environ.get(RUNTIME_LORA_ENV, "0").strip().lower() in ("1", "true")


_EMBEDDING_NAMES = ("lm_head", "embed_tokens", "wte", "embed_out", "word_embeddings", "output_layer")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model")


def run_vllm(
    model,
    adapters,
    served_model_name,
    host,
    port,
    api_key,
    max_model_len,
    dtype,
    print_command,
    runtime_lora: bool = False,
    max_lora_rank: int | None = None,
) -> None:
    """Check, then print (`print_command`) or run the vLLM server command. `runtime_lora`: the trainer may
    load adapters while it runs (GRPO's train.generation_server), so LoRA is on even without adapters."""
    from lorakit.models import resolve_model
    from lorakit.rundir import adapter_folder, base_model_of

    base_ref = model or base_model_of(next(iter(adapters.values())))
    model_dir = resolve_model(base_ref)
    folders = {name: adapter_folder(path).resolve() for name, path in adapters.items()}
    problems = preflight(model_dir, folders)
    if problems:
        raise LorakitError("vLLM would reject this: " + "; ".join(problems))
    cmd = build_vllm_command(
        model_dir, folders, served_model_name or base_ref, host, port, api_key, max_model_len, dtype,
        runtime_lora, max_lora_rank,
    )  # fmt: skip
    env = {RUNTIME_LORA_ENV: "True"} if runtime_lora else {}
    if print_command:
        typer.echo(shlex.join([f"{k}={v}" for k, v in env.items()] + cmd))
        return
    from lorakit.install import install_command, vllm_executable

    exe = vllm_executable()  # on PATH, or in the checkout's .venv-vllm (it pins its own torch)
    if exe is None:
        hint = install_command("vllm in a virtual environment of its own (it pins its own torch)", "install-gpu")
        raise LorakitError(f"vLLM is not installed ({hint}); use --engine builtin, "
                           "or --print-command to see the command")  # fmt: skip
    cmd[0] = exe
    print(f"running: {shlex.join([f'{k}={v}' for k, v in env.items()] + cmd)}", file=sys.stderr, flush=True)
    code = subprocess.call(cmd, env={**os.environ, **env})
    if code:
        raise typer.Exit(code)


def build_vllm_command(
    model_dir: Path,
    adapters: dict[str, Path],
    served_name: str,
    host: str,
    port: int,
    api_key: str | None = None,
    max_model_len: int | None = None,
    dtype: str = "auto",
    runtime_lora: bool = False,
    max_lora_rank: int | None = None,
) -> list[str]:
    """The `vllm serve` argument list for a model folder and (optionally) LoRA adapter folders.

    With `runtime_lora` LoRA is on even without adapters, the rank limit is `max_lora_rank` (else the
    adapters', else RUNTIME_LORA_RANK), and two more adapter slots are kept: a trainer loads its new
    adapter before it unloads the old one."""
    cmd = ["vllm", "serve", str(model_dir), "--served-model-name", served_name, "--host", host, "--port", str(port)]
    if dtype != "auto":
        cmd += ["--dtype", dtype]
    if max_model_len:
        cmd += ["--max-model-len", str(max_model_len)]
    if api_key:
        cmd += ["--api-key", api_key]
    template = adapter_template(model_dir, adapters)
    if template:
        cmd += ["--chat-template", template]
    cmd += parser_flags(model_dir, template)
    if adapters or runtime_lora:
        ranks = [adapter_rank(folder) for folder in adapters.values()]
        rank = max(ranks + [max_lora_rank or 0]) or RUNTIME_LORA_RANK
        slots = len(adapters) + (2 if runtime_lora else 0)
        cmd += ["--enable-lora", "--max-lora-rank", str(vllm_rank(rank)), "--max-loras", str(slots)]
    if adapters:
        cmd += ["--lora-modules", *(f"{name}={folder}" for name, folder in adapters.items())]
    return cmd


def adapter_template(model_dir: Path, adapters: dict[str, Path]) -> str | None:
    """The chat template the adapters were trained with (model.chat_template), when it is not the base's.

    vLLM renders every request with the base folder's template; an adapter trained with a replacement
    (SmolLM2 with a tool-calling template, say) must be served with that one, or its prompts would not be
    the ones it learned. Returns the path of the adapter's chat_template.jinja (or the text, for a template
    kept in tokenizer_config.json), for `--chat-template`; None when the base's own serves them all.
    """
    from lorakit.models.template_override import saved_chat_template, use_adapter_template

    class _Base:  # use_adapter_template works on a tokenizer; only its template matters here
        chat_template = _chat_template(model_dir) or None

    chosen = use_adapter_template(_Base(), list(adapters.values())).chat_template
    if not chosen or chosen == _Base.chat_template:
        return None
    for folder in adapters.values():
        if saved_chat_template(folder) == chosen and (Path(folder) / "chat_template.jinja").is_file():
            return str(Path(folder) / "chat_template.jinja")
    return chosen


def parser_flags(model_dir: Path, template: str | None = None) -> list[str]:
    """vLLM's tool-call and reasoning parsers for this model, as the built-in server parses it.

    The chat template decides the tool-call form (the same test as serve/tool_calls: Hermes
    `<tool_call>` blocks, which Qwen2.5 and Qwen3 write); Qwen3 (config model_type) also gets its
    reasoning parser, so replies carry the reasoning apart from the answer. Other families get no
    tool flags: vLLM then refuses tool_choice "auto" itself rather than guessing a parser.
    """
    from lorakit.serve.tool_calls import hermes

    flags = []
    text = Path(template).read_text(encoding="utf-8") if template and Path(template).is_file() else template
    if hermes.writes_this_form(text or _chat_template(model_dir)):
        flags += ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
    if _model_type(model_dir) == "qwen3":
        flags += ["--reasoning-parser", "qwen3"]
    return flags


def _chat_template(model_dir: Path) -> str:
    """The template text: chat_template.jinja, or tokenizer_config.json's chat_template (text or named list)."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    try:
        tpl = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
    except (OSError, json.JSONDecodeError):
        return ""
    if isinstance(tpl, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        return "\n".join(t.get("template", "") for t in tpl if isinstance(t, dict))
    return tpl if isinstance(tpl, str) else ""


def preflight(model_dir: Path, adapters: dict[str, Path]) -> list[str]:
    """Everything vLLM would refuse, one short sentence each (empty when all is well)."""
    problems = []
    if not (model_dir / "config.json").is_file():
        problems.append(f"{model_dir} has no config.json")
    if not any((model_dir / f).is_file() for f in _TOKENIZER_FILES):
        problems.append(f"{model_dir} has no tokenizer files ({', '.join(_TOKENIZER_FILES[:3])}); "
                        "copy them from the base model")  # fmt: skip
    for name, folder in adapters.items():
        meta = _adapter_config(folder)
        rank = adapter_rank(folder)
        if rank > VLLM_LORA_RANKS[-1]:
            problems.append(f"adapter {name}: rank {rank} is above vLLM's limit {VLLM_LORA_RANKS[-1]}; "
                            "merge it with `lorakit merge` and serve the merged folder")  # fmt: skip
        touched = _embedding_modules(folder, meta)
        if touched:
            problems.append(f"adapter {name}: trains {', '.join(touched)}, which vLLM's LoRA does not support; "
                            "merge it with `lorakit merge` and serve the merged folder")  # fmt: skip
        if meta.get("use_dora"):
            problems.append(f"adapter {name}: DoRA adapters are not supported by vLLM; merge it first")
        if meta.get("peft_type", "LORA") != "LORA":
            problems.append(f"adapter {name}: peft_type {meta.get('peft_type')} is not LoRA")
    return problems


def adapter_rank(folder: Path) -> int:
    """The largest LoRA rank in an adapter (r, or any per-module rank_pattern value)."""
    meta = _adapter_config(folder)
    return max([int(meta.get("r", 8)), *(int(v) for v in (meta.get("rank_pattern") or {}).values())])


def vllm_rank(rank: int) -> int:
    """The smallest --max-lora-rank vLLM accepts that fits `rank`."""
    return next((r for r in VLLM_LORA_RANKS if r >= rank), VLLM_LORA_RANKS[-1])


def _embedding_modules(folder: Path, meta: dict) -> list[str]:
    names = set()
    targets = meta.get("target_modules") or []
    saved = meta.get("modules_to_save") or []
    for item in ([targets] if isinstance(targets, str) else list(targets)) + list(saved):
        names.update(n for n in _EMBEDDING_NAMES if n in str(item))
    weights = folder / "adapter_model.safetensors"
    if weights.is_file():
        from safetensors import safe_open

        # The weights are the truth: target_modules may be a regex or "all-linear" expanded by PEFT.
        with safe_open(str(weights), framework="pt") as f:
            names.update(n for key in f.keys() for n in _EMBEDDING_NAMES if f".{n}." in f".{key}")
    return sorted(names)


def _adapter_config(folder: Path) -> dict:
    try:
        return json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise LorakitError(f"{folder / 'adapter_config.json'}: cannot read it ({e})") from None


def _model_type(model_dir: Path) -> str | None:
    try:
        return json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, json.JSONDecodeError):
        return None
