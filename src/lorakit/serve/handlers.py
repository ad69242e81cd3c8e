"""What each endpoint does: pick the model, build the prompt, check the budget, queue, answer.

Routes (app.py) stay thin; everything here works on protocol models and returns either a response
model or a StreamingResponse of server-sent events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from lorakit.inference.engine import Chunk, Engine, SamplingParams
from lorakit.inference.reasoning import ReasoningSplitter, split_reasoning
from lorakit.serve.limits import Limits, lone_surrogate
from lorakit.serve.logprobs import chat_logprobs, completion_logprobs
from lorakit.serve.protocol import (
    MAX_CHOICES,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
    ResponseMessage,
    SamplingFields,
    Usage,
)
from lorakit.serve.structured import StructuredError, ToolPlan, plan_tools, template_message, token_mask
from lorakit.serve.worker import GenerationFailed, Job, PromptScores, QueueFull, Task, Worker

log = logging.getLogger("lorakit.serve")


class APIError(Exception):
    """An error for the client, sent in OpenAI's shape with this HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class ServerState:
    """What the handlers share: the engine, its worker, and the names clients use."""

    engine: Engine
    worker: Worker
    base_name: str
    base_root: str
    adapters: dict[str, str] = field(default_factory=dict)  # served name -> adapter path
    limits: Limits = field(default_factory=Limits)


def list_models(state: ServerState) -> ModelList:
    """The base model, then each adapter with the base as its parent (as vLLM lists LoRA modules)."""
    ctx = state.engine.max_context
    cards = [ModelCard(id=state.base_name, root=state.base_root, max_model_len=ctx)]
    cards += [
        ModelCard(id=name, root=path, parent=state.base_name, max_model_len=ctx)
        for name, path in state.adapters.items()
    ]
    return ModelList(data=cards)


async def chat_completion(state: ServerState, req: ChatCompletionRequest, disconnected=None):
    """POST /v1/chat/completions. `disconnected`: an async callable, true once the client has gone."""
    _check_text(req)
    if len(req.messages) > state.limits.max_messages:
        raise APIError(
            400,
            f"{len(req.messages)} messages; this server takes at most {state.limits.max_messages} (--max-messages)",
            param="messages",
            code="too_many_messages",
        )
    _check_prompt_chars(state, sum(len(m.text()) + len(m.reasoning_content or "") for m in req.messages), "messages")
    adapter = _adapter_for(state, req.model)
    kwargs = dict(req.chat_template_kwargs or {})
    thinking = kwargs.pop("enable_thinking", None)
    try:
        plan = await run_in_threadpool(plan_tools, state.engine, req)
        messages = [template_message(m, i) for i, m in enumerate(req.messages)]
    except StructuredError as e:
        raise APIError(400, str(e), param=e.param) from None
    if plan.tools:
        kwargs["tools"] = plan.tools
    try:
        ids = await run_in_threadpool(state.engine.chat_prompt, messages, thinking, **kwargs)
    except Exception as e:  # template errors come as several exception types; all are the request's fault
        raise APIError(400, f"could not apply the chat template: {e}", param="messages") from None
    budget = _budget(state, len(ids), req.max_completion_tokens or req.max_tokens, "messages")
    opened = await run_in_threadpool(state.engine.opens_reasoning, ids)  # the tokenizer lock may be held
    try:
        mask = await run_in_threadpool(token_mask, state.engine, req, plan, ids)
    except StructuredError as e:
        raise APIError(400, str(e), param=e.param) from None
    top = req.logprob_count()
    job = _submit(state, [Task(ids, _params(req, budget, i, mask), adapter, i, logprobs=top) for i in range(req.n)])
    rid, created, started = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), time.perf_counter()
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        events = _chat_events(job, req, rid, created, len(ids), opened, include_usage, started, state.engine, plan)
        return StreamingResponse(events, media_type="text/event-stream")
    scores: dict = {} if top is not None else None
    texts, finals = await _collect(job, req.n, disconnected, scores)
    choices = []
    for i, (text, final) in enumerate(zip(texts, finals)):
        reasoning, content = split_reasoning(text, opened)
        content, calls = plan.split(content)
        logprobs = (
            None
            if top is None
            else await run_in_threadpool(chat_logprobs, state.engine, top, scores.get(i, {}).get("generated", []))
        )
        message = ResponseMessage(
            content=(content or None) if calls else content,
            reasoning_content=reasoning,
            tool_calls=[c.to_openai() for c in calls] or None,
        )
        choices.append(
            ChatChoice(
                index=i,
                finish_reason="tool_calls" if calls else final.finish_reason,
                logprobs=logprobs,
                message=message,
            )
        )
    usage = _usage(len(ids), finals)
    _log("chat", req.model, usage, finals, started)
    return ChatCompletionResponse(id=rid, created=created, model=req.model, choices=choices, usage=usage)


async def completion(state: ServerState, req: CompletionRequest, disconnected=None):
    """POST /v1/completions. `disconnected`: as for chat_completion."""
    _check_text(req)
    prompts = req.prompts()
    _check_prompt_chars(state, sum(len(p) for p in prompts if isinstance(p, str)), "prompt")
    adapter = _adapter_for(state, req.model)
    if len(prompts) * req.n > MAX_CHOICES:
        raise APIError(400, f"prompts x n must be at most {MAX_CHOICES} (got {len(prompts) * req.n})", param="n")
    encoded = [p if isinstance(p, list) else await run_in_threadpool(state.engine.encode, p) for p in prompts]
    if any(t < 0 or t >= state.engine.vocab_limit for ids in encoded for t in ids):
        raise APIError(400, f"token ids must be in [0, {state.engine.vocab_limit})", param="prompt")
    tasks = []
    top = req.logprobs
    for p, ids in enumerate(encoded):
        budget = _budget(state, len(ids), req.max_tokens, "prompt")
        # max_tokens 0 (echo only) generates nothing; the sampling settings are then unused
        tasks += [
            Task(
                ids,
                _params(req, max(budget, 1), i),
                adapter,
                p * req.n + i,
                logprobs=top,
                score_prompt=req.echo and top is not None,
                generate=budget > 0,
            )
            for i in range(req.n)
        ]
    echoes = [
        (p if isinstance(p, str) else await run_in_threadpool(state.engine.decode, p)) if req.echo else ""
        for p in prompts
    ]
    job = _submit(state, tasks)
    rid, created, started = f"cmpl-{uuid.uuid4().hex}", int(time.time()), time.perf_counter()
    prompt_tokens = sum(len(ids) for ids in encoded)
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        events = _completion_events(
            job, req, rid, created, prompt_tokens, echoes, include_usage, started, state.engine, encoded
        )
        return StreamingResponse(events, media_type="text/event-stream")
    scores: dict = {} if top is not None else None
    texts, finals = await _collect(job, len(tasks), disconnected, scores)
    choices = []
    for i, (text, final) in enumerate(zip(texts, finals)):
        logprobs = None
        if top is not None:
            got = scores.get(i, {})
            logprobs = await run_in_threadpool(
                completion_logprobs,
                state.engine,
                top,
                encoded[i // req.n] if req.echo else None,
                got.get("prompt"),
                got.get("generated"),
            )
        ids = {"prompt_token_ids": encoded[i // req.n], "token_ids": final.token_ids or []}
        choices.append(
            CompletionChoice(
                index=i,
                text=echoes[i // req.n] + text,
                finish_reason=final.finish_reason,
                logprobs=logprobs,
                **(ids if req.return_token_ids else {}),
            )
        )
    usage = _usage(prompt_tokens, finals)
    _log("completion", req.model, usage, finals, started)
    return CompletionResponse(id=rid, created=created, model=req.model, choices=choices, usage=usage)


# ---- streaming -------------------------------------------------------------------------------------
async def _chat_events(
    job: Job,
    req,
    rid,
    created,
    prompt_tokens,
    opened,
    include_usage,
    started,
    engine=None,
    plan: ToolPlan | None = None,
):
    top = req.logprob_count()
    pending: dict[int, list] = {}  # token logprobs not yet sent, per choice

    def event(index, delta, finish=None):
        scored = pending.pop(index, None) if top is not None else None
        logprobs = chat_logprobs(engine, top, scored).model_dump() if scored else None
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return _sse(
            {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": req.model,
                "choices": [choice],
                **({"usage": None} if include_usage else {}),
            }
        )

    splitters = [ReasoningSplitter(opened) for _ in range(req.n)]
    calls = [plan.stream() if plan else None for _ in range(req.n)]  # tool-call splitters, when calls are parsed
    finals: list[Chunk | None] = [None] * req.n
    try:
        for i in range(req.n):
            yield event(i, {"role": "assistant", "content": ""})
        async for index, chunk in job:
            pending.setdefault(index, []).extend(chunk.logprobs or [])
            reasoning, content = splitters[index].feed(chunk.text, final=chunk.finish_reason is not None)
            deltas = []
            if calls[index] is not None:
                content, deltas = calls[index].feed(content, final=chunk.finish_reason is not None)
            if reasoning:
                yield event(index, {"reasoning_content": reasoning})
            if content:
                yield event(index, {"content": content})
            for delta in deltas:  # as OpenAI streams a call: id, type and name first, then argument fragments
                yield event(index, {"tool_calls": [delta.to_openai()]})
            if chunk.finish_reason:
                finals[index] = chunk
                called = calls[index] is not None and calls[index].calls
                yield event(index, {}, "tool_calls" if called else chunk.finish_reason)
        for line in _stream_end(
            "chat.completion.chunk", "chat stream", req, rid, created, prompt_tokens, finals, include_usage, started
        ):
            yield line
    except GenerationFailed:
        yield _sse(APIError(500, "generation failed", "server_error").body())
        yield "data: [DONE]\n\n"
    finally:
        job.cancel()  # client gone or stream over: stop generating


async def _completion_events(
    job: Job, req, rid, created, prompt_tokens, echoes, include_usage, started, engine=None, encoded=None
):
    top = req.logprobs
    offsets = [0] * len(job.tasks)  # characters sent per choice, for text_offset

    def event(index, text, finish=None, logprobs=None):
        if logprobs is not None:
            logprobs = logprobs.model_dump()
        choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
        offsets[index] += len(text)
        return _sse(
            {
                "id": rid,
                "object": "text_completion",
                "created": created,
                "model": req.model,
                "choices": [choice],
                **({"usage": None} if include_usage else {}),
            }
        )

    finals: list[Chunk | None] = [None] * len(job.tasks)
    try:
        for i, prefix in enumerate(echoes[i // req.n] for i in range(len(job.tasks))):
            if prefix and top is None:  # with logprobs the echo goes out with the prompt's scores
                yield event(i, prefix)
        async for index, chunk in job:
            if isinstance(chunk, PromptScores):
                yield event(
                    index,
                    echoes[index // req.n],
                    None,
                    completion_logprobs(engine, top, encoded[index // req.n], chunk.scores),
                )
                continue
            if top is not None and (chunk.text or chunk.finish_reason or chunk.logprobs):
                yield event(
                    index,
                    chunk.text,
                    chunk.finish_reason,
                    completion_logprobs(engine, top, generated=chunk.logprobs or [], offset=offsets[index]),
                )
            elif chunk.text or chunk.finish_reason:
                yield event(index, chunk.text, chunk.finish_reason)
            if chunk.finish_reason:
                finals[index] = chunk
        for line in _stream_end(
            "text_completion", "completion stream", req, rid, created, prompt_tokens, finals, include_usage, started
        ):
            yield line
    except GenerationFailed:
        yield _sse(APIError(500, "generation failed", "server_error").body())
        yield "data: [DONE]\n\n"
    finally:
        job.cancel()


# ---- helpers ---------------------------------------------------------------------------------------
def _check_text(req) -> None:
    """Refuse lone surrogates anywhere in the request, before any of it is tokenised, logged or echoed."""
    where = lone_surrogate(req.model_dump(exclude_none=True))
    if where:
        raise APIError(
            400,
            f"{where}: the text holds a lone UTF-16 surrogate (e.g. \\ud800), which is not valid "
            "Unicode; send well-formed text",
            param=where,
        )


def _check_prompt_chars(state: ServerState, chars: int, param: str) -> None:
    """A prompt this long cannot fit the context; refuse it before spending seconds tokenising it."""
    most = state.limits.prompt_chars(state.engine.max_context)
    if chars > most:
        raise APIError(
            400,
            f"the prompt has {chars} characters; this server takes at most {most} (--max-prompt-chars)",
            param=param,
            code="context_length_exceeded",
        )


def _adapter_for(state: ServerState, model: str) -> str | None:
    if model == state.base_name:
        return None
    if model in state.adapters:
        return model
    names = ", ".join([state.base_name, *state.adapters])
    raise APIError(
        404, f"model {model!r} does not exist; this server has: {names}", param="model", code="model_not_found"
    )


def _budget(state: ServerState, prompt_len: int, max_tokens: int | None, param: str) -> int:
    """Tokens this request may generate; a 400 when prompt plus max_tokens exceed the context."""
    ctx = state.engine.max_context
    if prompt_len == 0:
        raise APIError(400, "the prompt is empty", param=param)
    wanted = max_tokens if max_tokens is not None else ctx - prompt_len
    if prompt_len + max(wanted, 1) > ctx:
        raise APIError(400, f"this model's maximum context length is {ctx} tokens; the request has {prompt_len} "
                            f"prompt tokens and asks for {max(wanted, 1)} more", param=param,
                       code="context_length_exceeded")  # fmt: skip
    return wanted


def _params(req: SamplingFields, budget: int, index: int, token_mask=None) -> SamplingParams:
    try:
        return SamplingParams(
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            top_k=max(req.top_k or 0, 0),
            max_new_tokens=budget,
            seed=None if req.seed is None else req.seed + index,
            stop=req.stop_list(),
            presence_penalty=req.presence_penalty,
            frequency_penalty=req.frequency_penalty,
            repetition_penalty=req.repetition_penalty,
            token_mask=token_mask,
        )
    except ValueError as e:
        raise APIError(400, str(e)) from None


def _submit(state: ServerState, tasks: list[Task]) -> Job:
    try:
        return state.worker.submit(tasks)
    except QueueFull:
        raise APIError(
            503, "the server is busy (request queue full); retry shortly", type="server_overloaded", code="queue_full"
        ) from None


async def _collect(
    job: Job, count: int, disconnected=None, scores: dict | None = None
) -> tuple[list[str], list[Chunk]]:
    """Texts and last chunks per choice; with `scores`, also {choice: {"prompt": [...], "generated": [...]}}."""
    texts: list[list[str]] = [[] for _ in range(count)]
    finals: list[Chunk] = [Chunk("")] * count
    # a streamed answer stops when its client stops reading; a whole one would be generated to the end
    # for nobody, so watch the connection while waiting
    watch = asyncio.create_task(_cancel_on_disconnect(job, disconnected)) if disconnected else None
    try:
        async for index, chunk in job:
            if isinstance(chunk, PromptScores):
                scores.setdefault(index, {})["prompt"] = chunk.scores
                continue
            if scores is not None and chunk.logprobs:
                scores.setdefault(index, {}).setdefault("generated", []).extend(chunk.logprobs)
            texts[index].append(chunk.text)
            if chunk.finish_reason:
                finals[index] = chunk
    except GenerationFailed:
        raise APIError(500, "generation failed", "server_error") from None
    finally:
        job.cancel()
        if watch:
            watch.cancel()
    return ["".join(t) for t in texts], finals


async def _cancel_on_disconnect(job: Job, disconnected, every: float = 0.2) -> None:
    while not job.cancelled.is_set():
        if await disconnected():
            job.cancel()
            return
        await asyncio.sleep(every)


def _usage(prompt_tokens: int, finals) -> Usage:
    completion = sum(f.completion_tokens for f in finals if f is not None)
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion, total_tokens=prompt_tokens + completion)


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _log(kind: str, model: str, usage: Usage, finals, started: float) -> None:
    reasons = ",".join(f.finish_reason or "-" for f in finals if f is not None)
    log.info(
        "%s model=%s prompt_tokens=%d completion_tokens=%d finish=%s time=%.2fs",
        kind,
        model,
        usage.prompt_tokens,
        usage.completion_tokens,
        reasons,
        time.perf_counter() - started,
    )


def _stream_end(obj: str, label: str, req, rid, created, prompt_tokens, finals, include_usage, started) -> list[str]:
    """The closing events of a stream: the usage chunk when asked for, then [DONE]; logs the request."""
    usage = _usage(prompt_tokens, finals)
    _log(label, req.model, usage, finals, started)
    lines = []
    if include_usage:
        lines.append(
            _sse(
                {
                    "id": rid,
                    "object": obj,
                    "created": created,
                    "model": req.model,
                    "choices": [],
                    "usage": usage.model_dump(),
                }
            )
        )
    return lines + ["data: [DONE]\n\n"]
