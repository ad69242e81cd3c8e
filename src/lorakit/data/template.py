"""Render a Conversation with the model's own chat template and mark which tokens carry loss.

The mask is computed on text, not on template markers (Qwen3's template has no `{% generation %}`):
1. render the whole conversation once;
2. for each assistant turn, the render of the turns before it plus the generation prompt is, for
   ChatML-like templates, a prefix of the full render: the answer starts where that prefix ends
   (with thinking off it starts at the content itself, so the empty `<think>` block stays prompt);
   where the prefix property fails we find the turn's content in the render instead;
3. the answer ends after its content plus the end-of-turn token right after it (`<|im_end|>`), not
   the newline that follows; a turn with tool calls ends at the first end-of-turn token after its
   content, so the call text the template writes there (Hermes `<tool_call>` blocks, Llama's JSON, ...)
   carries loss too;
4. tokenize the full text once with offsets and label the tokens that lie (mostly) inside an answer span.

Tools reach the template as `tools=` (it decides where the list goes: Qwen puts it in the system turn);
a template that cannot render them is refused once per tokenizer (check_tool_support), never ignored.
"""

from __future__ import annotations

from lorakit.data.conversation import Conversation, Message
from lorakit.errors import LorakitError

IGNORE = -100
THINKING = ("off", "on", "auto")
TRAIN_ON = ("all", "last")
# Tokens that close a turn in the common chat formats (ChatML, Llama 3, Gemma, Phi, Mistral).
TURN_ENDS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>", "</s>")
# A one-call conversation every tool-capable template renders; its function name is unlikely in any template.
_PROBE_NAME = "lorakit_probe_fn"
_PROBE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": _PROBE_NAME,
            "description": "Probe.",
            "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
        },
    }
]
_PROBE_MESSAGES = [
    {"role": "user", "content": "Probe?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": _PROBE_NAME, "arguments": {"x": 1}}}],
    },
    {"role": "tool", "content": "1", "tool_call_id": "call_0", "name": _PROBE_NAME},
    {"role": "assistant", "content": "One."},
]


def uses_thinking(conv: Conversation, thinking: str) -> bool:
    """Whether this sample is rendered with reasoning: always (on), never (off), or when it has some (auto)."""
    if thinking not in THINKING:
        raise LorakitError(f"data.thinking: expected one of {', '.join(THINKING)}, got {thinking!r}")
    return thinking == "on" or (thinking == "auto" and conv.has_reasoning)


def template_source(tokenizer) -> str:
    """The tokenizer's chat template text; a LorakitError when it has none."""
    tpl = getattr(tokenizer, "chat_template", None)
    if isinstance(tpl, dict):
        tpl = tpl.get("default") or next(iter(tpl.values()), None)
    if not tpl:
        name = getattr(tokenizer, "name_or_path", "the tokenizer")
        raise LorakitError(f"{name}: the tokenizer has no chat template; use a chat (instruct) model")
    return tpl


def template_messages(tokenizer, conv: Conversation, think: bool) -> list[dict]:
    """The messages as the chat template expects them; reasoning only when `think`.

    Templates that know `reasoning_content` (Qwen3) get it as a field; for others the reasoning is
    written into the content as a `<think>` block, the convention those models' users follow.
    """
    knows_reasoning = "reasoning_content" in template_source(tokenizer)
    out = []
    for m in conv.messages:
        d = {"role": m.role, "content": m.content}
        if think and m.role == "assistant" and m.reasoning:
            if knows_reasoning:
                d["reasoning_content"] = m.reasoning
            else:
                d["content"] = f"<think>\n{m.reasoning}\n</think>\n\n{m.content}"
        if m.tool_calls:
            d["tool_calls"] = [c.to_openai() for c in m.tool_calls]
        if m.tool_call_id is not None:
            d["tool_call_id"] = m.tool_call_id
        if m.name is not None:
            d["name"] = m.name
        out.append(d)
    return out


def render_messages(
    tokenizer,
    messages: list[dict],
    think: bool,
    generation_prompt: bool,
    source: str = "",
    tools: list[dict] | None = None,
) -> str:
    """The chat template's text for `messages` (and `tools`); a LorakitError naming `source` if it refuses."""
    try:
        return tokenizer.apply_chat_template(
            messages,
            tools=tools or None,
            tokenize=False,
            add_generation_prompt=generation_prompt,
            enable_thinking=think,
        )
    except Exception as e:  # jinja raises TemplateError (e.g. raise_exception("roles must alternate"))
        where = f"{source}: " if source else ""
        raise LorakitError(f"{where}the model's chat template rejected the conversation: {e}") from None


def _find(full: str, text: str, start: int) -> tuple[int, int] | None:
    # Templates may trim whitespace around content (Llama 3 does; Qwen3 strips leading newlines).
    for candidate in (text, text.strip(), text.lstrip("\n"), text.rstrip()):
        if candidate or not text:
            pos = full.find(candidate, start)
            if pos >= 0:
                return pos, pos + len(candidate)
    return None


def check_tool_support(tokenizer, doing: str = "train on tool conversations") -> None:
    """Refuse, in one line naming the model, a chat template that would drop tools or tool calls.

    Checked once per tokenizer on a probe conversation: the template must read `tools`, render
    differently with them than without, and write the call's function name besides the tool list.
    """
    source = template_source(tokenizer)
    named = getattr(tokenizer, "chat_template", None)
    if isinstance(named, dict) and named.get("tool_use"):
        source = named["tool_use"]  # transformers renders with this one whenever tools are passed
    if getattr(tokenizer, "_lorakit_tools_ok", None) == source:  # the template may be swapped after a check
        return
    name = getattr(tokenizer, "name_or_path", "") or "the model"
    why = None
    if "tools" not in source:
        why = "the template never reads `tools`"
    else:
        try:
            with_tools = render_messages(tokenizer, _PROBE_MESSAGES, False, False, tools=_PROBE_TOOLS)
            without = render_messages(tokenizer, _PROBE_MESSAGES, False, False)
        except LorakitError as e:
            why = f"the template rejects a one-call tool conversation ({str(e).split(': ', 1)[-1]})"
        else:
            if with_tools == without:
                why = "the template renders the same text with tools as without"
            elif with_tools.count(_PROBE_NAME) < 2:
                why = "the template renders the tool list but not the assistant's tool_calls"
    if why:
        raise LorakitError(
            f"{name}: cannot {doing}: {why}; use a model whose chat "
            "template renders tools and tool calls (Qwen2.5, Qwen3, Llama 3.1, ...)"
        )
    try:
        tokenizer._lorakit_tools_ok = source
    except AttributeError:
        pass


def end_markers(tokenizer) -> list[str]:
    """Strings that may close an assistant turn: eos first, then the other special tokens, longest first."""
    cached = getattr(tokenizer, "_lorakit_end_markers", None)
    if cached is not None:
        return cached
    specials = [t for t in (getattr(tokenizer, "all_special_tokens", None) or []) if isinstance(t, str)]
    # Chat end markers that some tokenizers register as plain added tokens rather than special ones.
    known = [t for t in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>") if _is_token(tokenizer, t)]
    eos = [tokenizer.eos_token] if getattr(tokenizer, "eos_token", None) else []
    markers = eos + sorted({t for t in specials + known if t and t not in eos}, key=len, reverse=True)
    try:
        tokenizer._lorakit_end_markers = markers
    except AttributeError:
        pass
    return markers


def _is_token(tokenizer, text: str) -> bool:
    # get_vocab() copies the whole vocabulary (0.3 s for Qwen's); ask for one token instead.
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.token_to_id(text) is not None
    ids = tokenizer.convert_tokens_to_ids([text])
    return bool(ids) and ids[0] is not None and ids[0] != getattr(tokenizer, "unk_token_id", None)


def render_with_spans(
    tokenizer, conv: Conversation, *, thinking: str = "off", train_on: str = "all"
) -> tuple[str, list[tuple[int, int]]]:
    """Render `conv` to text and return the character spans that carry loss (answers + end-of-turn)."""
    if train_on not in TRAIN_ON:
        raise LorakitError(f"data.train_on: expected all or last, got {train_on!r}")
    think = uses_thinking(conv, thinking)
    if conv.has_tools:
        check_tool_support(tokenizer)
    messages = template_messages(tokenizer, conv, think)
    tools = conv.tools or None
    full = render_messages(tokenizer, messages, think, generation_prompt=False, source=conv.source, tools=tools)
    markers = end_markers(tokenizer)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, m in enumerate(conv.messages):
        content = messages[i]["content"]
        if m.role != "assistant":
            found = _find(full, content, cursor) if content else None
            if found:
                cursor = found[1]
            continue
        start = _prompt_end(tokenizer, full, messages[:i], think, cursor, tools)
        if start is None and m.tool_calls and not content.strip():
            raise LorakitError(
                f"{conv.source}: turn {i + 1}: cannot locate this tool-call turn in the rendered "
                "conversation (the chat template's generation prompt is not a prefix of it)"
            )
        found = _find(full, content, start if start is not None else cursor)
        if found is None:
            raise LorakitError(
                f"{conv.source}: turn {i + 1}: the chat template changed the assistant text so it "
                "cannot be located in the rendered conversation"
            )
        c_start, c_end = found
        if not think:
            a_start = c_start
        elif start is not None:
            a_start = start
        else:
            a_start = _reasoning_start(full, m, cursor, c_start)
        a_end = c_end
        if m.tool_calls:
            a_end = _calls_end(full, m, markers, c_end, conv.source, i)
        else:
            for marker in markers:
                if full.startswith(marker, c_end):
                    a_end = c_end + len(marker)
                    break
        spans.append((a_start, a_end))
        cursor = a_end
    if not spans:
        raise LorakitError(f"{conv.source}: no assistant turn to train on")
    return full, spans[-1:] if train_on == "last" else spans


def _calls_end(full: str, m: Message, markers: list[str], c_end: int, source: str, i: int) -> int:
    """End of a tool-call turn: the first end-of-turn marker after its content, included.

    The call text between content and marker is the template's own (Hermes blocks, Llama's JSON, ...);
    each called function's name must be in it, or the template dropped the calls.
    """
    best = None
    # end-of-turn tokens first: a template may write another special token inside the call (<|python_tag|>)
    for group in ([k for k in markers if k == markers[0] or k in TURN_ENDS], markers):
        for marker in group:
            pos = full.find(marker, c_end)
            if pos >= 0 and (best is None or pos < best[0]):
                best = (pos, pos + len(marker))
        if best is not None:
            break
    if best is None:
        raise LorakitError(f"{source}: turn {i + 1}: no end-of-turn token after the tool calls in the rendered text")
    written = full[c_end : best[0]]
    missing = [c.name for c in m.tool_calls if c.name not in written]
    if missing:
        raise LorakitError(f"{source}: turn {i + 1}: the chat template did not write the call to {missing[0]!r}")
    return best[1]


def _prompt_end(
    tokenizer, full: str, before: list[dict], think: bool, cursor: int, tools: list[dict] | None = None
) -> int | None:
    """End of the generation prompt for the next turn, if its render is a prefix of the full render."""
    # Qwen3 adds an empty think block to the generation prompt only with thinking off, and earlier turns
    # render without one; so try both settings and keep the one that is a true prefix.
    for variant in (think, not think):
        try:
            prompt = render_messages(tokenizer, before, variant, generation_prompt=True, tools=tools)
        except LorakitError:
            return None  # some templates refuse partial conversations; find the content instead
        if len(prompt) >= cursor and full.startswith(prompt):
            return len(prompt)
    return None


def _reasoning_start(full: str, m: Message, cursor: int, c_start: int) -> int:
    """Fallback start of a thinking answer: its `<think>` tag (or reasoning text) before the content."""
    if m.reasoning:
        pos = full.find(m.reasoning, cursor, c_start)
        if pos >= 0:
            tag = full.rfind("<think>", cursor, pos)
            return tag if tag >= 0 else pos
    return c_start


def tokenize_conversation(
    tokenizer, conv: Conversation, *, thinking: str = "off", train_on: str = "all", max_length: int = 1024
) -> dict:
    """Tokenize `conv` through the tokenizer's chat template with an assistant-only label mask.

    Returns {"input_ids", "labels" (-100 where no loss), "truncated"}. `thinking` is off (empty think
    block as prompt, reasoning dropped), on (reasoning trained) or auto (on when the sample has
    reasoning); `train_on` is all (every assistant turn) or last. Samples longer than `max_length`
    tokens are cut at the end and flagged truncated.
    """
    text, spans = render_with_spans(tokenizer, conv, thinking=thinking, train_on=train_on)
    ids, offsets = encode_with_offsets(tokenizer, text)
    labels = label_tokens(ids, offsets, spans)
    truncated = len(ids) > max_length
    if truncated:
        ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "labels": labels, "truncated": truncated}


def encode_with_offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character offsets of `text`; the template already wrote any special tokens."""
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:
        raise LorakitError("the tokenizer cannot report character offsets; use a fast (tokenizers) tokenizer") from None
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def label_tokens(ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """Copy a token's id into its label when most of its characters lie inside a loss span, else -100.

    Majority, not containment: a token may straddle the start of an answer (Mistral's `[/INST] Hello`
    tokenizes as `▁Hello`, whose space belongs to the prompt), and the answer's first word must still train.
    """
    labels = [IGNORE] * len(ids)
    k = 0
    for j, (s, e) in enumerate(offsets):
        while k < len(spans) and s >= spans[k][1]:
            k += 1
        if k == len(spans):
            break
        inside = min(e, spans[k][1]) - max(s, spans[k][0])
        if e > s and 2 * inside >= e - s:
            labels[j] = ids[j]
    return labels
