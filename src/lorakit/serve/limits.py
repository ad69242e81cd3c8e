"""What one request may cost the server: body size, message count, prompt characters, valid Unicode.

Every limit is checked before the expensive step it protects: the body size while the body is still
arriving (so an oversized body is never held in memory), the message count and prompt length before
the prompt is rendered and tokenised (which holds the one tokenizer every request shares).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# A prompt longer than this many characters per context token cannot fit: tokens of real text
# average 1-5 characters (see docs/reliability.md), so 16 leaves room for odd text.
CHARS_PER_TOKEN_BOUND = 16


@dataclass(frozen=True)
class Limits:
    """The `lorakit serve` flags of the same names; `max_prompt_chars=None` means 16 x the context."""

    max_request_bytes: int = 8 * 1024 * 1024
    max_messages: int = 2048
    max_prompt_chars: int | None = None

    def prompt_chars(self, context: int) -> int:
        return self.max_prompt_chars if self.max_prompt_chars is not None else CHARS_PER_TOKEN_BOUND * context


def lone_surrogate(value, path: str = "") -> str | None:
    """The dotted path of the first string in `value` holding a lone surrogate ("\\ud800"), else None.

    JSON may spell them as escapes, but they are not Unicode text: tokenizers and UTF-8 encoders fail
    on them, so a request carrying one is refused before anything else reads it.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = lone_surrogate(item, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Plain ASGI middleware: refuse a body over `max_bytes` with a 413 while it is still arriving.

    A declared Content-Length over the cap is refused before one byte is read; a chunked body is
    counted as it streams in and refused at the first chunk past the cap, so the server never holds
    more than the cap plus one chunk of any request.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen, refused, started = 0, False, False

        async def counted_receive():
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message):
            nonlocal started
            if refused:  # whatever the app answers to the interrupted body, the client gets the 413
                return
            started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _BodyTooLarge:
            pass
        if refused and not started:
            await self._refuse(send)

    async def _refuse(self, send) -> None:
        mib = self.max_bytes / (1024 * 1024)
        body = json.dumps(
            {
                "error": {
                    "message": f"the request body is larger than this server's limit of {mib:g} MiB (--max-request-mb)",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "request_too_large",
                }
            }
        ).encode()
        # Connection: close, as the rest of the body is never read and cannot be skipped in HTTP/1.1.
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
