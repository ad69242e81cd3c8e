"""Request and response models in OpenAI's wire format (the subset lorakit serves).

Requests are strict about types (a string where a number belongs is a 400, as with OpenAI) and
tolerant of fields we do not use (clients send many; they are ignored, as vLLM does).
"""

from __future__ import annotations

import time
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_CHOICES = 16  # n x prompts per request: generation is sequential, so keep one request bounded
MAX_LOGPROBS = 20  # alternatives per token, OpenAI's cap (vLLM's default max_logprobs too)
# Template arguments the server sets itself; letting a request override them breaks prompt building.
RESERVED_TEMPLATE_KWARGS = {"tokenize", "add_generation_prompt", "return_dict", "conversation", "messages",
                            "continue_final_message", "return_assistant_tokens_mask"}


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class StreamOptions(_Request):
    include_usage: bool = Field(False, description="send a last chunk with token usage")


class SamplingFields(_Request):
    """Fields shared by /v1/completions and /v1/chat/completions."""

    model: str = Field(..., description="a name from /v1/models: the base model or a LoRA adapter")
    max_tokens: Optional[int] = Field(None, ge=0, description="most tokens to generate (default: fill the context); "
                                      "0 only with echo on /v1/completions")
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
    user: Optional[str] = None

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


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Optional[Union[str, list[ContentPart]]] = None
    reasoning_content: Optional[str] = None
    name: Optional[str] = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1, description="OpenAI's newer name for max_tokens")
    chat_template_kwargs: Optional[dict[str, Any]] = Field(
        None, description='extra chat template variables, e.g. {"enable_thinking": false} for Qwen3')
    logprobs: Optional[bool] = Field(None, description="return each generated token's log-probability")
    top_logprobs: Optional[int] = Field(None, ge=0, le=MAX_LOGPROBS,
                                        description="likeliest alternatives per token (needs logprobs: true)")

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
        ..., description="text, several texts, token ids, or several lists of token ids")
    echo: bool = Field(False, description="put the prompt in front of the completion")
    suffix: Optional[str] = Field(None, description="not supported; must be unset")
    logprobs: Optional[int] = Field(None, ge=0, le=MAX_LOGPROBS,
                                    description="log-probability of each token and this many alternatives")

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


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: Optional[str] = None
    reasoning_content: Optional[str] = None


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
    finish_reason: Optional[Literal["stop", "length"]] = None
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
