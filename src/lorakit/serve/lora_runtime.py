"""vLLM's runtime LoRA API on the built-in server: `POST /v1/load_lora_adapter` and
`POST /v1/unload_lora_adapter`, so a trainer can hand a new adapter to a running server every step (GRPO
rollouts through `train.generation_server`: training/rollout_server.py).

Enabled as vLLM enables it: the environment variable VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (or 1), or
`lorakit serve --allow-runtime-lora`. Switched off, the routes do not exist and a client gets 404, as
from vLLM: a server that anyone on the network can make read a folder must be asked for explicitly.
Answers follow vLLM: 200 with a plain-text "Success: ..." line, and OpenAI-shaped errors (400 for a name
already loaded without load_inplace, 404 for an unknown name or a folder that does not exist).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from lorakit.errors import LorakitError
from lorakit.serve.handlers import APIError, ServerState
from lorakit.serve.vllm import RUNTIME_LORA_ENV

log = logging.getLogger("lorakit.serve")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # as every request body here: no field ignored


class LoadLoRAAdapterRequest(_Strict):
    """POST /v1/load_lora_adapter's body, as vLLM defines it."""

    lora_name: str = Field(..., min_length=1, description="the name requests will give as `model`")
    lora_path: str = Field(..., min_length=1, description="an adapter folder (adapter_config.json + weights)")
    load_inplace: bool = Field(False, description="replace an adapter already loaded under this name")


class UnloadLoRAAdapterRequest(_Strict):
    lora_name: str = Field(..., min_length=1)


def install_runtime_lora(app: FastAPI, state: ServerState) -> None:
    """Add the two routes (the caller decides whether they are allowed)."""
    log.warning("runtime LoRA loading is on (%s): clients may load adapters from disk", RUNTIME_LORA_ENV)

    @app.post("/v1/load_lora_adapter", response_class=PlainTextResponse)
    async def load_lora_adapter(req: LoadLoRAAdapterRequest) -> str:
        await run_in_threadpool(load, state, req.lora_name, req.lora_path, req.load_inplace)
        return f"Success: LoRA adapter '{req.lora_name}' added successfully."

    @app.post("/v1/unload_lora_adapter", response_class=PlainTextResponse)
    async def unload_lora_adapter(req: UnloadLoRAAdapterRequest) -> str:
        await run_in_threadpool(unload, state, req.lora_name)
        return f"Success: LoRA adapter '{req.lora_name}' removed successfully."


def load(state: ServerState, name: str, path: str, inplace: bool = False) -> None:
    """Attach the adapter at `path` to the engine's model under `name` (between generations: the engine
    lock is held, so no request sees a half-loaded adapter)."""
    if name == state.base_name:
        raise APIError(400, f"'{name}' is the base model's name; pick another lora_name", param="lora_name")
    if name in state.adapters and not inplace:
        raise APIError(400, f"The lora adapter '{name}' has already been loaded. If you want to load the adapter "
                            "in place, set 'load_inplace' to True.", param="lora_name")  # fmt: skip
    folder = Path(path)
    if not (folder / "adapter_config.json").is_file():
        raise APIError(404, f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError", "lora_path")
    engine = state.engine
    with engine.lock:
        try:
            _attach(engine, name, folder, replace=name in state.adapters)
        except LorakitError as e:
            state.adapters.pop(name, None)  # an in-place load that failed has removed the old one too
            raise APIError(400, str(e), param="lora_path") from None
    state.adapters[name] = str(folder.resolve())
    log.info("loaded LoRA adapter %s from %s", name, folder)


def unload(state: ServerState, name: str) -> None:
    if name not in state.adapters:
        raise APIError(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError", "lora_name")
    engine = state.engine
    with engine.lock:
        engine.model.delete_adapter(name)
        engine.adapters.remove(name)
    del state.adapters[name]
    log.info("unloaded LoRA adapter %s", name)


def _attach(engine, name: str, folder: Path, replace: bool) -> None:
    from peft import PeftModel

    from lorakit.inference.engine import attach_adapters

    if replace:
        engine.model.delete_adapter(name)
        engine.adapters.remove(name)
    if isinstance(engine.model, PeftModel):
        model = engine.model
        try:
            model.load_adapter(str(folder), adapter_name=name)
        except (RuntimeError, ValueError, KeyError) as e:
            with contextlib.suppress(Exception):  # peft may have injected the layers before the shapes failed
                model.delete_adapter(name)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LorakitError(f"{folder}: adapter does not fit this base model: {first[:200]}") from None
    else:  # the first adapter of a server started without any: wrap the base once
        model = attach_adapters(engine.model, {name: folder})
    engine.model = model.eval()
    engine.adapters.append(name)
