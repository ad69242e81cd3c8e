"""What `tools`, `tool_choice` and `response_format` change in a chat request.

- the prompt: tools and earlier calls reach the model through its own chat template (as in training);
- the decoding: `tool_choice` "required" or named and `response_format` become a grammar mask
  (lorakit.inference.constrained); "none" bans the token that opens a call where it is one token;
- the answer: the model's call text is parsed by its template's family (serve/tool_calls) into
  OpenAI `tool_calls`; a malformed call stays plain content.

Every problem is a `StructuredError` with the request field it concerns; the handler makes it a 400.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from lorakit.data.conversation import Problem
from lorakit.data.tools import read_call
from lorakit.errors import LorakitError
from lorakit.serve.protocol import ChatCompletionRequest, ChatMessage
from lorakit.serve.tool_calls import CallStream, ParsedCall, UnknownFamily, family_of


class StructuredError(ValueError):
    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


@dataclass
class ToolPlan:
    """A chat request's tools, as the template and the decoder need them."""

    mode: str  # "off", "none", "auto", "required" or "named"
    tools: list[dict] | None = None  # OpenAI function tools, for the template
    family: ModuleType | None = None

    @property
    def parses_calls(self) -> bool:
        return self.mode in ("auto", "required", "named")

    def split(self, content: str) -> tuple[str, list[ParsedCall]]:
        """(content, calls) of a finished answer's content; a malformed call stays content."""
        if not self.parses_calls:
            return content, []
        found = self.family.parse(content)
        return found if found is not None else (content, [])

    def stream(self) -> CallStream | None:
        return self.family.stream() if self.parses_calls else None


def plan_tools(engine, req: ChatCompletionRequest) -> ToolPlan:
    """Check that the model can take the request's tools (call in a worker thread: it renders templates)."""
    mode = req.tool_mode()
    has_calls = any(m.tool_calls for m in req.messages)
    if mode == "off" and not has_calls:
        return ToolPlan(mode)
    from lorakit.data.template import check_tool_support, template_source

    with engine.tokenizer_lock:
        try:
            check_tool_support(engine.tokenizer, doing="serve tools")
            template = template_source(engine.tokenizer)
            named = getattr(engine.tokenizer, "chat_template", None)
            if isinstance(named, dict) and named.get("tool_use"):
                template = named["tool_use"]
            family = family_of(template, req.model)
        except LorakitError as e:
            raise StructuredError(f"{req.model}: {str(e).split(': ', 1)[-1]}", "tools") from None
        except UnknownFamily as e:
            raise StructuredError(str(e), "tools") from None
    tools = [t.model_dump(exclude_none=True) for t in req.tools or []]
    return ToolPlan(mode, tools or None, family)


def template_message(m: ChatMessage, index: int) -> dict:
    """A request message as chat templates take it; earlier calls' arguments as objects (as in training)."""
    # Chat templates know system/user/assistant/tool; OpenAI's newer "developer" role is a system role.
    msg = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
    if m.reasoning_content:
        msg["reasoning_content"] = m.reasoning_content
    if m.name:
        msg["name"] = m.name
    if m.tool_calls:
        calls = []
        for j, call in enumerate(m.tool_calls):
            problems: list[Problem] = []
            where = f"messages[{index}].tool_calls[{j}]"
            found = read_call(call.model_dump(), where, "", problems)
            if found is None:
                raise StructuredError(f"{problems[0].field}: {problems[0].message}", problems[0].field)
            calls.append({"id": call.id, "type": "function", "function": {"name": found[1], "arguments": found[2]}})
        msg["tool_calls"] = calls
    if m.tool_call_id is not None:
        msg["tool_call_id"] = m.tool_call_id
    return msg


def token_mask(engine, req: ChatCompletionRequest, plan: ToolPlan, prompt_ids: list[int]):
    """The `SamplingParams.token_mask` factory this request needs, or None (call in a worker thread)."""
    fmt = req.response_format
    wants_json = fmt is not None and fmt.type != "text"
    if plan.mode == "none":
        with engine.tokenizer_lock:
            ids = engine.tokenizer.encode(plan.family.OPEN_TAG, add_special_tokens=False)
        if len(ids) == 1:
            from lorakit.inference.constrained import BanTokens

            return BanTokens(ids)
        return None
    if plan.mode not in ("required", "named") and not wants_json:
        return None
    from lorakit.inference import constrained

    reasoning = _reasoning_mode(engine, prompt_ids)
    with engine.tokenizer_lock:  # building llguidance's tokenizer reads the Rust tokenizer
        llg = constrained.llg_tokenizer(engine.tokenizer, engine.eos_ids)
        lark = constrained.Lark(engine.tokenizer, llg)
        start = constrained.reasoning_prefix(lark, reasoning)
        rules = [constrained.REASONING_RULES]
        if plan.mode in ("required", "named"):
            tools = plan.tools
            if plan.mode == "named":
                tools = [t for t in tools if t["function"]["name"] == req.tool_choice.function.name]
            parallel = req.parallel_tool_calls is not False and plan.mode == "required"
            rules.append(plan.family.grammar(lark, tools, parallel))
            body, param = "calls", "tools"
        else:
            schema = fmt.json_schema.schema_ if fmt.type == "json_schema" else None
            rules.append(f"answer: {lark.json(schema if schema is not None else {'type': 'object'})}")
            body, param = "answer", "response_format"
            if plan.parses_calls:  # tool_choice auto: a call is still an answer
                rules.append(plan.family.grammar(lark, plan.tools, req.parallel_tool_calls is not False))
                body = "(answer | calls)"
    try:
        grammar = constrained.Grammar("\n".join([f"start: {start}{body}", *rules]), llg, engine.eos_ids)
    except constrained.GrammarError as e:
        raise StructuredError(f"{param}: the schema cannot be enforced: {e}", param) from None
    return grammar.mask


def _reasoning_mode(engine, prompt_ids: list[int]) -> str:
    """Where the prompt leaves reasoning: "open" (ends inside <think>), "none" (closed, or no thinking), or
    "optional" (a template that thinks, not yet begun: the model may think before the constrained part)."""
    if engine.opens_reasoning(prompt_ids):
        return "open"
    tail = "".join(engine.token_texts(prompt_ids[-8:])).rstrip()
    from lorakit.data.template import template_source

    with engine.tokenizer_lock:
        thinks = "<think>" in template_source(engine.tokenizer)
    return "none" if tail.endswith("</think>") or not thinks else "optional"
