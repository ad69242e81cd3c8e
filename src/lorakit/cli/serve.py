"""`lorakit serve`: an OpenAI-compatible server, built in (FastAPI + transformers), or through vLLM or llama.cpp."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

import typer

from lorakit.errors import LorakitError


def serve_command(
    model: Annotated[
        Optional[str],
        typer.Option(
            "--model",
            help="base model or merged folder: built-in name, folder or hub id (default: the first adapter run's base)",
        ),
    ] = None,
    lora_modules: Annotated[
        Optional[list[str]],
        typer.Option("--lora-modules", help="NAME=RUN_DIR (or adapter folder); repeat for several adapters"),
    ] = None,
    served_model_name: Annotated[
        Optional[str],
        typer.Option("--served-model-name", help="name clients use for the base model (default: --model as given)"),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="address to bind; keep 127.0.0.1 unless you also set --api-key")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port")] = 8000,
    api_key: Annotated[
        Optional[str], typer.Option("--api-key", help="require 'Authorization: Bearer KEY' on /v1 routes")
    ] = None,
    max_queue: Annotated[
        int, typer.Option("--max-queue", help="requests that may wait while one runs; more get 503")
    ] = 64,
    max_model_len: Annotated[
        Optional[int],
        typer.Option("--max-model-len", help="context length for prompt + completion (default: the model's)"),
    ] = None,
    engine: Annotated[
        Literal["builtin", "vllm", "llama.cpp"],
        typer.Option(
            help="builtin (transformers, CPU or GPU), vllm (GPU) or llama.cpp (a GGUF from lorakit export; CPU)"
        ),
    ] = "builtin",
    print_command: Annotated[
        bool,
        typer.Option("--print-command", help="with --engine vllm or llama.cpp: print the engine's command and exit"),
    ] = False,
    dtype: Annotated[str, typer.Option("--dtype", help="weight dtype: auto, float32, bfloat16, float16")] = "auto",
    max_request_mb: Annotated[
        float,
        typer.Option(
            "--max-request-mb", help="largest request body in MiB; bigger ones get 413 unread (builtin engine)"
        ),
    ] = 8.0,
    max_messages: Annotated[
        int, typer.Option("--max-messages", help="most messages in one chat request (builtin engine)")
    ] = 2048,
    max_prompt_chars: Annotated[
        Optional[int],
        typer.Option(
            "--max-prompt-chars",
            help="longest prompt in characters, refused before tokenising "
            "(default: 16 x the context length; builtin engine)",
        ),
    ] = None,
    allow_runtime_lora: Annotated[
        bool,
        typer.Option(
            "--allow-runtime-lora",
            help="vLLM's POST /v1/load_lora_adapter and /v1/unload_lora_adapter, for GRPO's "
            "train.generation_server (as VLLM_ALLOW_RUNTIME_LORA_UPDATING=True does); builtin and vllm",
        ),
    ] = False,
    max_lora_rank: Annotated[
        Optional[int],
        typer.Option(
            "--max-lora-rank",
            help="with --engine vllm: the largest LoRA rank it will take "
            "(default: the adapters', or 64 for adapters loaded at runtime)",
        ),
    ] = None,
) -> None:
    """Serve a model and its LoRA adapters. Example: lorakit serve --lora-modules persona=runs/demo"""
    adapters = parse_lora_modules(lora_modules or [])
    if model is None and not adapters:
        raise LorakitError("give --model (a built-in name, folder or hub id) or --lora-modules NAME=RUN_DIR")
    if max_queue < 1 or not 0 < port < 65536 or (max_model_len is not None and max_model_len < 2):
        raise LorakitError("--max-queue must be >= 1, --port in 1..65535 and --max-model-len >= 2")
    if not max_request_mb > 0 or max_messages < 1 or (max_prompt_chars is not None and max_prompt_chars < 1):
        raise LorakitError("--max-request-mb must be > 0, --max-messages and --max-prompt-chars >= 1")
    if max_lora_rank is not None and (engine != "vllm" or max_lora_rank < 1):
        raise LorakitError("--max-lora-rank: a positive rank, for --engine vllm only (the builtin engine takes any)")
    from lorakit.serve.vllm import runtime_lora_allowed

    runtime_lora = runtime_lora_allowed(allow_runtime_lora)
    if engine == "vllm":
        from lorakit.serve.vllm import run_vllm

        run_vllm(
            model, adapters, served_model_name, host, port, api_key, max_model_len, dtype, print_command,
            runtime_lora, max_lora_rank,
        )  # fmt: skip
        return
    if engine == "llama.cpp" and allow_runtime_lora:
        raise LorakitError("--allow-runtime-lora: llama.cpp's server cannot load adapters at runtime; "
                           "use --engine builtin or vllm")  # fmt: skip
    if engine == "llama.cpp":
        from lorakit.serve.llama_cpp import run_llama_cpp

        run_llama_cpp(model, adapters, served_model_name, host, port, api_key, max_model_len, print_command)
        return
    if print_command:
        raise LorakitError("--print-command prints an engine's command; add --engine vllm or --engine llama.cpp")
    from lorakit.serve.limits import Limits

    limits = Limits(int(max_request_mb * 1024 * 1024), max_messages, max_prompt_chars)
    from lorakit.serve.builtin import run_builtin

    run_builtin(
        model, adapters, served_model_name, host, port, api_key, max_queue, max_model_len, dtype, limits, runtime_lora
    )


def parse_lora_modules(items: list[str]) -> dict[str, str]:
    """`["a=runs/a", "b=runs/b"]` -> {"a": "runs/a", "b": "runs/b"}; names must be unique."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise LorakitError(f"--lora-modules {item!r}: expected NAME=RUN_DIR, e.g. persona=runs/demo")
        if name in out:
            raise LorakitError(f"--lora-modules: the name {name!r} is given twice")
        out[name] = path
    return out
