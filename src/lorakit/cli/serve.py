"""`lorakit serve`: an OpenAI-compatible server, built in (FastAPI + transformers), or through vLLM or llama.cpp."""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
from typing import Annotated, Literal, Optional

import typer

from lorakit.errors import LorakitError


def serve_command(
    model: Annotated[Optional[str], typer.Option(
        "--model", help="base model or merged folder: built-in name, folder or hub id "
                        "(default: the first adapter run's base)")] = None,
    lora_modules: Annotated[Optional[list[str]], typer.Option(
        "--lora-modules", help="NAME=RUN_DIR (or adapter folder); repeat for several adapters")] = None,
    served_model_name: Annotated[Optional[str], typer.Option(
        "--served-model-name", help="name clients use for the base model (default: --model as given)")] = None,
    host: Annotated[str, typer.Option(
        help="address to bind; keep 127.0.0.1 unless you also set --api-key")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", help="require 'Authorization: Bearer KEY' on /v1 routes")] = None,
    max_queue: Annotated[int, typer.Option(
        "--max-queue", help="requests that may wait while one runs; more get 503")] = 64,
    max_model_len: Annotated[Optional[int], typer.Option(
        "--max-model-len", help="context length for prompt + completion (default: the model's)")] = None,
    engine: Annotated[Literal["builtin", "vllm", "llama.cpp"], typer.Option(
        help="builtin (transformers, CPU or GPU), vllm (GPU) or llama.cpp (a GGUF from lorakit export; CPU)")
    ] = "builtin",
    print_command: Annotated[bool, typer.Option(
        "--print-command", help="with --engine vllm or llama.cpp: print the engine's command and exit")] = False,
    dtype: Annotated[str, typer.Option(help="weight dtype: auto, float32, bfloat16, float16")] = "auto",
    max_request_mb: Annotated[float, typer.Option(
        "--max-request-mb", help="largest request body in MiB; bigger ones get 413 unread (builtin engine)")] = 8.0,
    max_messages: Annotated[int, typer.Option(
        "--max-messages", help="most messages in one chat request (builtin engine)")] = 2048,
    max_prompt_chars: Annotated[Optional[int], typer.Option(
        "--max-prompt-chars", help="longest prompt in characters, refused before tokenising "
                                   "(default: 16 x the context length; builtin engine)")] = None,
) -> None:
    """Serve a model and its LoRA adapters. Example: lorakit serve --lora-modules persona=runs/demo"""
    adapters = parse_lora_modules(lora_modules or [])
    if model is None and not adapters:
        raise LorakitError("give --model (a built-in name, folder or hub id) or --lora-modules NAME=RUN_DIR")
    if max_queue < 1 or not 0 < port < 65536 or (max_model_len is not None and max_model_len < 2):
        raise LorakitError("--max-queue must be >= 1, --port in 1..65535 and --max-model-len >= 2")
    if not max_request_mb > 0 or max_messages < 1 or (max_prompt_chars is not None and max_prompt_chars < 1):
        raise LorakitError("--max-request-mb must be > 0, --max-messages and --max-prompt-chars >= 1")
    if engine == "vllm":
        from lorakit.serve.vllm import run_vllm

        run_vllm(model, adapters, served_model_name, host, port, api_key, max_model_len, dtype, print_command)
        return
    if engine == "llama.cpp":
        from lorakit.serve.llama_cpp import run_llama_cpp

        run_llama_cpp(model, adapters, served_model_name, host, port, api_key, max_model_len, print_command)
        return
    if print_command:
        raise LorakitError("--print-command prints an engine's command; add --engine vllm or --engine llama.cpp")
    from lorakit.serve.limits import Limits

    limits = Limits(int(max_request_mb * 1024 * 1024), max_messages, max_prompt_chars)
    run_builtin(model, adapters, served_model_name, host, port, api_key, max_queue, max_model_len, dtype, limits)


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


def run_builtin(model, adapters, served_model_name, host, port, api_key, max_queue, max_model_len, dtype,
                limits=None) -> None:
    """Load the engine, then run uvicorn until Ctrl-C."""
    from lorakit.run import adapter_folder, base_model_of

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    base_ref = model or base_model_of(next(iter(adapters.values())))
    base_name = served_model_name or base_ref
    if base_name in adapters:
        raise LorakitError(f"--lora-modules: {base_name!r} is also the base model's name; rename the adapter")
    folders = {name: str(adapter_folder(path).resolve()) for name, path in adapters.items()}
    from lorakit.models import resolve_model

    resolve_model(base_ref)  # a wrong --model fails here, before torch is imported (resolved once, cached)
    _check_port_free(host, port)
    if not api_key and not _is_loopback(host):
        print(f"warning: serving on {host} without --api-key: anyone who can reach it can use it", file=sys.stderr)
    print(f"loading {base_ref}" + (f" with adapters {', '.join(adapters)}" if adapters else "") + " ...",
          file=sys.stderr, flush=True)
    import uvicorn  # the server and torch: after the arguments, adapters and port have been checked

    from lorakit.inference.engine import Engine
    from lorakit.serve.app import create_app
    from lorakit.serve.handlers import ServerState
    from lorakit.serve.worker import Worker

    eng = Engine.load(base_ref, folders, dtype=dtype)
    if max_model_len is not None:
        if max_model_len > eng.max_context:
            raise LorakitError(f"--max-model-len {max_model_len} is longer than the model's context "
                               f"({eng.max_context})")
        eng.max_context = max_model_len
    state = ServerState(eng, Worker(eng, max_queue), base_name, base_root=_root(base_ref), adapters=folders)
    if limits is not None:
        state.limits = limits
    app = create_app(state, api_key)
    names = ", ".join([base_name, *adapters])
    print(f"serving {names} on http://{host}:{port}/v1 (web chat at http://{host}:{port}/)",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
    state.worker.stop()


def _root(ref: str) -> str:
    try:
        from lorakit.models import resolve_model

        return str(resolve_model(ref))
    except LorakitError:
        return ref


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port_free(host: str, port: int) -> None:
    """Fail in one line before loading the model, rather than in uvicorn after it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise LorakitError(f"cannot listen on {host}:{port}: {e.strerror}; pick another --port or --host") from None

