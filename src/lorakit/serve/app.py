"""The FastAPI app: thin routes, OpenAI-shaped errors, bearer-token auth, the web page.

Every error a client can see is `{"error": {"message", "type", "param", "code"}}` with a fitting
status; unexpected failures are logged here and reach the client only as "internal server error".
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lorakit import __version__
from lorakit.serve import handlers
from lorakit.serve.handlers import APIError, ServerState
from lorakit.serve.limits import BodySizeLimit
from lorakit.serve.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    ModelList,
)

log = logging.getLogger("lorakit.serve")
STATIC = Path(__file__).parent / "static"
_ERRORS = {
    400: {"model": ErrorResponse},
    401: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    413: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}


def create_app(state: ServerState, api_key: str | None = None, runtime_lora: bool = False) -> FastAPI:
    """Build the app around a loaded engine and its worker. `api_key` guards every /v1 route;
    `runtime_lora` adds vLLM's load/unload adapter routes (serve/lora_runtime.py)."""
    app = FastAPI(title="lorakit", version=__version__, description="OpenAI-compatible API over lorakit models")
    app.state.lorakit = state
    _install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=state.limits.max_request_bytes)
    if api_key:  # added last, so it runs first: a request without the key is refused before its body is read
        _install_auth(app, api_key)

    @app.get("/health", summary="liveness: 200 when the server can take requests")
    async def health() -> dict:
        return {"status": "ok", "waiting": state.worker.waiting}

    @app.get("/v1/models", response_model=ModelList, responses=_ERRORS)
    async def models() -> ModelList:
        return handlers.list_models(state)

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses=_ERRORS)
    async def chat_completions(req: ChatCompletionRequest, request: Request):
        return await handlers.chat_completion(state, req, request.is_disconnected)

    @app.post("/v1/completions", response_model=CompletionResponse, responses=_ERRORS)
    async def completions(req: CompletionRequest, request: Request):
        return await handlers.completion(state, req, request.is_disconnected)

    if runtime_lora:
        from lorakit.serve.lora_runtime import install_runtime_lora

        install_runtime_lora(app, state)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    return app


def _error(
    status: int,
    message: str,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict | None = None,
) -> JSONResponse:
    return JSONResponse(APIError(status, message, type, param, code).body(), status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        log.info("%s %s -> %d %s", request.method, request.url.path, exc.status, exc.message)
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return _error(exc.status, exc.message, exc.type, exc.param, exc.code, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"msg": "invalid request", "loc": (), "type": ""}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            message, param = f"the request body is not valid JSON: {first.get('ctx', {}).get('error', '')}", None
        elif not loc and first.get("type") in ("missing", "model_attributes_type", "dict_type", "model_type"):
            message, param = "the request body must be a JSON object", None
        elif first.get("type") == "extra_forbidden":  # a field we do not implement: say so, never ignore it
            param = ".".join(loc)
            message = f"{param}: this server does not implement this field; leave it out (docs/serving.md)"
        else:
            param = ".".join(loc) or None
            message = f"{param}: {first['msg']}" if param else str(first["msg"])
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problems)"
        log.info("%s %s -> 400 %s", request.method, request.url.path, message)
        return _error(400, message.removeprefix("Value error, "), param=param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _error(exc.status_code, str(exc.detail), kind)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return _error(500, "internal server error", "server_error")


def _install_auth(app: FastAPI, api_key: str) -> None:
    app.add_middleware(_RequireKey, expected=api_key.encode())


class _RequireKey:
    """Plain ASGI middleware: the page, health check and API docs stay open; /v1 needs the key. (Not
    Starlette's BaseHTTPMiddleware, which hides a client's disconnect from the route behind it.)"""

    def __init__(self, app, expected: bytes):
        self.app, self.expected = app, expected

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            scheme, _, token = dict(scope.get("headers") or []).get(b"authorization", b"").partition(b" ")
            # the scheme is case-insensitive (RFC 9110 11.1): "bearer KEY" is as good as "Bearer KEY"
            if scheme.lower() != b"bearer" or not secrets.compare_digest(token.strip(), self.expected):
                response = _error(
                    401,
                    "invalid or missing API key; send the header Authorization: Bearer <key>",
                    "authentication_error",
                    code="invalid_api_key",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
