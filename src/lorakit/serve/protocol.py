"""Request and response models in OpenAI's wire format (the subset lorakit serves).

Requests are strict about types (a string where a number belongs is a 400, as with OpenAI) and about
fields: one this server does not implement is a 400 naming it, never silently ignored, since ignoring
`tools` or `logit_bias` would change the answer without a word. The few fields in `IGNORED_FIELDS`
are taken and ignored by design: none of them can change an answer (docs/serving.md lists them).
"""

from __future__ import annotations

import time
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lorakit.data.tools import schema_problem

MAX_CHOICES = 16  # n x prompts per request: generation is sequential, so keep one request bounded
MAX_LOGPROBS = 20  # alternatives per token, OpenAI's cap (vLLM's default max_logprobs too)
# Template arguments the server sets itself; letting a request override them breaks prompt building.
RESERVED_TEMPLATE_KWARGS = {
    "tokenize",
    "add_generation_prompt",
    "return_dict",
    "conversation",
    "messages",
    "continue_final_message",
    "return_assistant_tokens_mask",
    "tools",
    "documents",
}


# Accepted and ignored: labels for the caller's own bookkeeping, and hints about billing or caching.
# None of them changes which tokens are generated. `store` is taken only as false (nothing is stored).
IGNORED_FIELDS = {"user", "metadata", "service_tier", "prompt_cache_key", "safety_identifier", "store"}
TOOL_NAME = r"^[a-zA-Z0-9_-]{1,64}$"  # OpenAI's rule for function names


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _TopLevel(_Request):
    """A request body: its ignored-by-design fields are dropped before validation, the rest must be known."""

    @model_validator(mode="before")
    @classmethod
    def _drop_ignored(cls, data):
        if not isinstance(data, dict):
            return data
        if data.get("store") not in (None, False):
            raise ValueError("store: this server stores nothing; send store: false or leave it out")
        return {k: v for k, v in data.items() if k not in IGNORED_FIELDS or k in cls.model_fields}


class StreamOptions(_Request):
    include_usage: bool = Field(False, description="send a last chunk with token usage")


class SamplingFields(_TopLevel):
    """Fields shared by /v1/completions and /v1/chat/completions."""

    model: str = Field(..., description="a name from /v1/models: the base model or a LoRA adapter")
    max_tokens: Optional[int] = Field(
        None,
        ge=0,
        description="most tokens to generate (default: fill the context); 0 only with echo on /v1/completions",
    )
    temperature: Optional[float] = Field(None, ge=0, le=2, description="0 = greedy; default 1")
    top_p: Optional[float] = Field(None, gt=0, le=1, description="nucleus sampling mass; default 1")
    top_k: Optional[int] = Field(None, ge=-1, description="sample among the k likeliest tokens; 0 or -1 = off")
    n: int = Field(1, ge=1, le=MAX_CHOICES, description="choices to generate")
    stream: bool = Field(False, description="send server-sent events")
    stream_options: Optional[StreamOptions] = None
    stop: Optional[Union[str, list[str]]] = Field(None, description="stop strings (not included in the output)")
    seed: Optional[int] = Field(None, description="seed for reproducible sampling (choice i uses seed + i)")
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    repetition_penalty: float = Field(1.0, ge=0.01, le=10, description="Hugging Face style penalty (vLLM extension)")

    @model_validator(mode="after")
    def _check_common(self):
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        if len(stops) > 16:
            raise ValueError("stop: at most 16 stop strings")
        return self

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ContentPart(_Request):
    type: Literal["text"]
    text: str


class FunctionCall(_Request):
    name: str
    arguments: str = Field(..., description="the arguments as JSON text of an object")


class RequestToolCall(_Request):
    """A call an assistant message made earlier in the conversation (sent back by the client)."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Optional[Union[str, list[ContentPart]]] = None
    reasoning_content: Optional[str] = None
    name: Optional[str] = None
    tool_calls: Optional[list[RequestToolCall]] = Field(None, description="assistant messages: the calls it made")
    tool_call_id: Optional[str] = Field(None, description="tool messages: the call this result answers")
    refusal: Optional[str] = Field(None, description="echoed back by some clients; must be null")

    @model_validator(mode="after")
    def _check_tool_fields(self):
        if self.tool_calls and self.role != "assistant":
            raise ValueError("tool_calls: only assistant messages carry tool calls")
        if self.tool_call_id is not None and self.role != "tool":
            raise ValueError("tool_call_id: only tool messages carry it")
        if self.refusal is not None:
            raise ValueError("refusal: this server cannot take a refused turn back as input")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class FunctionDef(_Request):
    name: str = Field(..., pattern=TOOL_NAME)
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = Field(None, description="a JSON Schema object (default: no arguments)")
    strict: Optional[bool] = Field(
        None,
        description="arguments always follow the schema when the call is "
        "constrained (tool_choice required or named); see docs/serving.md",
    )

    @model_validator(mode="after")
    def _check_schema(self):
        if self.parameters is not None:
            why = schema_problem(self.parameters)
            if why:
                raise ValueError(f"parameters: not a JSON Schema object: {why}")
        return self


class ToolDef(_Request):
    type: Literal["function"]
    function: FunctionDef


class FunctionName(_Request):
    name: str


class NamedToolChoice(_Request):
    type: Literal["function"]
    function: FunctionName


class JsonSchemaFormat(_Request):
    name: str = Field(..., pattern=TOOL_NAME)
    description: Optional[str] = None
    schema_: Optional[dict[str, Any]] = Field(None, alias="schema", description="the JSON Schema of the answer")
    strict: Optional[bool] = None

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JsonSchemaFormat] = None

    @model_validator(mode="after")
    def _check_schema(self):
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema: needed with type json_schema, and only then")
        schema = self.json_schema.schema_ if self.json_schema else None
        if schema is not None:
            from jsonschema.exceptions import SchemaError
            from jsonschema.validators import validator_for

            try:
                validator_for(schema).check_schema(schema)
            except SchemaError as e:
                raise ValueError(f"json_schema.schema: not a JSON Schema: {e.message}") from None
        return self


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1, description="OpenAI's newer name for max_tokens")
    chat_template_kwargs: Optional[dict[str, Any]] = Field(
        None, description='extra chat template variables, e.g. {"enable_thinking": false} for Qwen3'
    )
    logprobs: Optional[bool] = Field(None, description="return each generated token's log-probability")
    top_logprobs: Optional[int] = Field(
        None, ge=0, le=MAX_LOGPROBS, description="likeliest alternatives per token (needs logprobs: true)"
    )
    tools: Optional[list[ToolDef]] = Field(None, description="functions the model may call")
    tool_choice: Optional[Union[Literal["none", "auto", "required"], NamedToolChoice]] = Field(
        None,
        description='"auto" (default with tools), "none", "required", or {"type": "function", '
        '"function": {"name": ...}}; required and named are enforced by constrained decoding',
    )
    parallel_tool_calls: Optional[bool] = Field(None, description="may one answer make several calls (default true)")
    response_format: Optional[ResponseFormat] = Field(
        None, description='{"type": "json_object"} or {"type": "json_schema", ...}: enforced by constrained decoding'
    )

    @model_validator(mode="after")
    def _check_tools(self):
        names = [t.function.name for t in self.tools or []]
        if len(set(names)) < len(names):
            raise ValueError("tools: two tools have the same name")
        choice = self.tool_choice
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(
                f"tool_choice: no tool named {choice.function.name!r} in tools ({', '.join(names) or 'none given'})"
            )
        if choice == "required" and not names:
            raise ValueError("tool_choice: required needs tools")
        forced = choice == "required" or isinstance(choice, NamedToolChoice)
        if forced and self.response_format is not None and self.response_format.type != "text":
            raise ValueError("response_format: a forced tool call and a JSON answer exclude each other; send one")
        return self

    def tool_mode(self) -> str:
        """ "off" (no tools), "none", "auto", "required" or "named"."""
        if not self.tools:
            return "off"
        if isinstance(self.tool_choice, NamedToolChoice):
            return "named"
        return self.tool_choice or "auto"

    @model_validator(mode="after")
    def _check_logprobs(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.max_tokens == 0 or self.max_completion_tokens == 0:
            raise ValueError("max_tokens must be at least 1")
        return self

    def logprob_count(self) -> int | None:
        """Alternatives per token when logprobs are asked for, else None."""
        return (self.top_logprobs or 0) if self.logprobs else None

    @model_validator(mode="after")
    def _check_template_kwargs(self):
        kwargs = self.chat_template_kwargs or {}
        value = kwargs.get("enable_thinking")
        if value is not None and not isinstance(value, bool):
            raise ValueError("chat_template_kwargs.enable_thinking must be true or false")
        taken = sorted(RESERVED_TEMPLATE_KWARGS & set(kwargs))
        if taken:
            raise ValueError(f"chat_template_kwargs: {', '.join(taken)} cannot be set by a request")
        return self


class CompletionRequest(SamplingFields):
    prompt: Union[str, list[str], list[int], list[list[int]]] = Field(
        ..., description="text, several texts, token ids, or several lists of token ids"
    )
    echo: bool = Field(False, description="put the prompt in front of the completion")
    suffix: Optional[str] = Field(None, description="not supported; must be unset")
    logprobs: Optional[int] = Field(
        None, ge=0, le=MAX_LOGPROBS, description="log-probability of each token and this many alternatives"
    )
    return_token_ids: Optional[bool] = Field(
        None,
        description="vLLM extension: each choice also carries prompt_token_ids and token_ids (every generated "
        "id, the end-of-sequence token included); not with stream on this server",
    )

    @model_validator(mode="after")
    def _check_token_ids(self):
        if self.return_token_ids and self.stream:
            raise ValueError("return_token_ids: this server returns token ids only without stream")
        return self

    @model_validator(mode="after")
    def _check_echo_only(self):
        if self.max_tokens == 0 and not self.echo:
            raise ValueError("max_tokens 0 needs echo: true (it returns the prompt, with logprobs if asked)")
        return self

    @model_validator(mode="after")
    def _check_prompt(self):
        if self.suffix:
            raise ValueError("suffix is not supported by this server")
        if isinstance(self.prompt, list) and not self.prompt:
            raise ValueError("prompt must not be empty")
        if isinstance(self.prompt, list) and any(isinstance(p, list) and not p for p in self.prompt):
            raise ValueError("prompt: a list of token ids must not be empty")
        return self

    def prompts(self) -> list[Union[str, list[int]]]:
        """The prompts as a list: one text, several texts, or one list of token ids."""
        if isinstance(self.prompt, str) or (self.prompt and isinstance(self.prompt[0], int)):
            return [self.prompt]
        return list(self.prompt)


# ---- responses -------------------------------------------------------------------------------------
class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "lorakit"
    root: Optional[str] = None
    parent: Optional[str] = None
    max_model_len: Optional[int] = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ResponseFunction(BaseModel):
    name: str
    arguments: str


class ResponseToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: ResponseFunction


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: Optional[str] = None
    reasoning_content: Optional[str] = None
    tool_calls: Optional[list[ResponseToolCall]] = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: Optional[list[int]] = None


class TokenLogprobEntry(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    """Chat logprobs: one entry per generated token (reasoning and end of sequence included)."""

    content: Optional[list[TokenLogprobEntry]] = None


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy completions shape; with echo the prompt's tokens come first (the first has null)."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[Optional[float]] = Field(default_factory=list)
    top_logprobs: list[Optional[dict[str, float]]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class ChatChoice(BaseModel):
    index: int
    message: ResponseMessage
    finish_reason: Optional[Literal["stop", "length", "tool_calls"]] = None
    logprobs: Optional[ChatLogprobs] = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Optional[Literal["stop", "length"]] = None
    logprobs: Optional[CompletionLogprobs] = None
    # vLLM's names, filled with return_token_ids (null otherwise, as vLLM sends them)
    prompt_token_ids: Optional[list[int]] = None
    token_ids: Optional[list[int]] = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    error: ErrorInfo
