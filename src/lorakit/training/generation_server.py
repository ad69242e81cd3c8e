"""The trainer's side of a generation server (`train.generation_server`): vLLM's OpenAI-compatible API as
`lorakit serve --engine vllm` or the built-in `lorakit serve` speak it, with runtime LoRA switched on.

Three calls are used, all as vLLM defines them:
- `GET /v1/models`: the engine (`owned_by`: "vllm" or "lorakit") and the base model's folder (`root`);
- `POST /v1/load_lora_adapter` {"lora_name", "lora_path"} and `POST /v1/unload_lora_adapter` {"lora_name"}
  (routes that exist only with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True: a 404 means it is off);
- `POST /v1/completions` with the prompt as token ids, one completion per request with its own `seed`, and
  `return_token_ids` (vLLM >= 0.10.2), whose choice carries `token_ids` (the end-of-sequence token included)
  and `finish_reason`.

Every failure (unreachable, refused, timed out, an answer of the wrong shape) is one LorakitError line that
names the server and what to do; none reaches the step as a traceback or a NaN.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from lorakit import settings
from lorakit.errors import LorakitError

# Reading may take long: a request waits behind the others the server is generating. Connecting may not.
TIMEOUT = httpx.Timeout(connect=10.0, read=900.0, write=60.0, pool=900.0)
BUSY_RETRIES = 60  # a 503 (queue full) is retried after its Retry-After, this many times at most
START_HINT = "lorakit serve --engine vllm --allow-runtime-lora --model BASE (or --engine builtin on CPU)"


@dataclass
class Sampled:
    """One completion as the server returned it."""

    token_ids: list[int]
    finish_reason: str  # "stop" (end of sequence) or "length"


class GenerationServer:
    """An HTTP client bound to one server; thread-safe (one connection pool for all requests)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        key = settings.generation_server_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.url, timeout=TIMEOUT, headers=headers)

    def close(self) -> None:
        self.http.close()

    # ---- what the server is ----------------------------------------------------------------------
    def base_model(self) -> dict:
        """The base model's card from /v1/models (the one without a parent): id, root, owned_by."""
        body = self._json(self._request("GET", "/v1/models"), "/v1/models")
        cards = body.get("data") if isinstance(body, dict) else None
        bases = [c for c in cards or [] if isinstance(c, dict) and not c.get("parent") and c.get("id")]
        if not bases:
            raise LorakitError(f"train.generation_server: {self.url}/v1/models lists no base model")
        return bases[0]

    # ---- adapters --------------------------------------------------------------------------------
    def load_adapter(self, name: str, path: str) -> None:
        self._request("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})

    def unload_adapter(self, name: str) -> None:
        self._request("POST", "/v1/unload_lora_adapter", {"lora_name": name})

    # ---- sampling --------------------------------------------------------------------------------
    def complete(self, body: dict) -> Sampled:
        """One /v1/completions request for one completion (`n` 1), its token ids and finish reason."""
        answer = self._json(self._request("POST", "/v1/completions", body), "/v1/completions")
        choices = answer.get("choices") if isinstance(answer, dict) else None
        choice = choices[0] if isinstance(choices, list) and len(choices) == 1 else None
        ids = choice.get("token_ids") if isinstance(choice, dict) else None
        finish = choice.get("finish_reason") if isinstance(choice, dict) else None
        if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            raise LorakitError(
                f"train.generation_server: {self.url}/v1/completions answered without token ids "
                "(choices[0].token_ids); it needs vLLM >= 0.10.2 (return_token_ids) or lorakit serve"
            )
        if finish not in ("stop", "length") or len(ids) > body["max_tokens"]:
            raise LorakitError(
                f"train.generation_server: {self.url}/v1/completions answered {len(ids)} tokens with "
                f"finish_reason {finish!r} for max_tokens {body['max_tokens']}; expected stop or length within it"
            )
        return Sampled(ids, finish)

    # ---- HTTP ------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        where = f"{self.url}{path}"
        try:
            response = self.http.request(method, path, json=body)
            for _ in range(BUSY_RETRIES):  # lorakit's server answers 503 while --max-queue requests wait
                if response.status_code != 503:
                    break
                time.sleep(_retry_after(response))
                response = self.http.request(method, path, json=body)
        except httpx.TimeoutException:
            raise LorakitError(f"train.generation_server: {where} did not answer in time; "
                               "is the server overloaded or stuck? (its log says)") from None  # fmt: skip
        except httpx.HTTPError as e:
            raise LorakitError(f"train.generation_server: cannot reach {self.url} ({type(e).__name__}: "
                               f"{_first_line(e)}); start it with `{START_HINT}`") from None  # fmt: skip
        # a route that does not exist says just "Not Found" (FastAPI's own 404, vLLM's and lorakit's); a
        # missing adapter folder is a 404 with its own message
        if response.status_code == 404 and "lora_adapter" in path and _message(response) == "Not Found":
            raise LorakitError(
                f"train.generation_server: {self.url} has no runtime LoRA API ({path} is 404): start the server "
                "with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (lorakit serve --allow-runtime-lora does it)"
            )
        if response.status_code == 401:
            raise LorakitError(
                f"train.generation_server: {self.url} wants an API key; set {settings.GENERATION_SERVER_KEY}"
            )
        if response.status_code != 200:
            raise LorakitError(
                f"train.generation_server: {where} refused ({response.status_code}): {_message(response)}"
            )
        return response

    def _json(self, response: httpx.Response, path: str):
        try:
            return response.json()
        except ValueError:
            raise LorakitError(
                f"train.generation_server: {self.url}{path} answered with something other than JSON: "
                f"{response.text[:120]!r}"
            ) from None


def _message(response: httpx.Response) -> str:
    """The error's message as OpenAI-shaped servers send it ({"error": {"message"}}, or vLLM's older
    {"message"}), else the start of the body; one line."""
    try:
        body = response.json()
    except ValueError:
        return " ".join(response.text.split())[:300] or "(no body)"
    error = body.get("error", body) if isinstance(body, dict) else body
    message = (error.get("message") or error.get("detail")) if isinstance(error, dict) else None
    return " ".join(str(message or body).split())[:300]


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(30.0, max(0.1, float(response.headers.get("Retry-After", 1))))
    except ValueError:
        return 1.0


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "no detail"
