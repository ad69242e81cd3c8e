"""The built-in server's startup: check the arguments, adapters and port, load the engine, run uvicorn.

`lorakit serve` (cli/serve.py) parses the flags and calls `run_builtin`; the vLLM and llama.cpp launchers
beside this module do the same for those engines.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys

from lorakit.errors import LorakitError


def run_builtin(
    model,
    adapters,
    served_model_name,
    host,
    port,
    api_key,
    max_queue,
    max_model_len,
    dtype,
    limits=None,
    runtime_lora: bool = False,
) -> None:
    """Load the engine, then run uvicorn until Ctrl-C. `runtime_lora`: vLLM's load/unload adapter routes."""
    from lorakit.rundir import adapter_folder, base_model_of

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
    print(
        f"loading {base_ref}" + (f" with adapters {', '.join(adapters)}" if adapters else "") + " ...",
        file=sys.stderr,
        flush=True,
    )
    import uvicorn  # the server and torch: after the arguments, adapters and port have been checked

    from lorakit.inference.engine import Engine
    from lorakit.serve.app import create_app
    from lorakit.serve.handlers import ServerState
    from lorakit.serve.worker import Worker

    eng = Engine.load(base_ref, folders, dtype=dtype)
    if max_model_len is not None:
        if max_model_len > eng.max_context:
            raise LorakitError(
                f"--max-model-len {max_model_len} is longer than the model's context ({eng.max_context})"
            )
        eng.max_context = max_model_len
    state = ServerState(eng, Worker(eng, max_queue), base_name, base_root=_root(base_ref), adapters=folders)
    if limits is not None:
        state.limits = limits
    app = create_app(state, api_key, runtime_lora)
    names = ", ".join([base_name, *adapters])
    print(
        f"serving {names} on http://{host}:{port}/v1 (web chat at http://{host}:{port}/)", file=sys.stderr, flush=True
    )
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
