"""The Ollama Modelfile beside an exported GGUF: FROM, a TEMPLATE that renders what the Hugging Face chat
template renders, PARAMETER stop on every end-of-turn token, and lorakit chat's sampling defaults.

A wrong TEMPLATE or a missing stop is the usual reason an exported fine-tune answers garbage or never
stops in Ollama, so the TEMPLATE is built from what the HF template actually renders for probe
conversations and checked against it (rendered with lorakit.exporting.gotemplate) before it is written.
ChatML templates (Qwen2, Qwen3, SmolLM2) are written; for other formats export says so and writes none.
"""

from __future__ import annotations

from dataclasses import dataclass

from lorakit.errors import LorakitError
from lorakit.exporting.gotemplate import render

# lorakit chat's defaults with thinking off (lorakit.cli.chat.DEFAULTS["off"]; Qwen3's non-thinking
# recommendation and the tutorial's temperature 0.7, top_p 0.8). A unit test keeps the two equal.
SAMPLING_DEFAULTS = {"temperature": 0.7, "top_p": 0.8, "top_k": 20}
# Ollama's own repeat_penalty default is 1.1; lorakit generates with none, so say 1.0 explicitly.
REPEAT_PENALTY = 1.0

_PROBE = [{"role": "system", "content": "SYS"}, {"role": "user", "content": "U1"},
          {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]  # fmt: skip


@dataclass
class ChatFormat:
    default_system: str | None  # what the template adds when a conversation has no system message
    generation_prompt: str  # text after "<|im_start|>assistant\n" that opens the model's answer


def hf_prompt(tokenizer, messages: list[dict]) -> str:
    """The HF chat template's prompt for `messages`, thinking off (the chat default lorakit trains for)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                         enable_thinking=False)  # fmt: skip


def chatml_format(tokenizer) -> ChatFormat | None:
    """Read the ChatML details off the HF template's output; None when the template is not ChatML."""
    if not tokenizer.chat_template or "<|im_start|>" not in str(tokenizer.chat_template):
        return None
    try:
        bare = hf_prompt(tokenizer, [{"role": "user", "content": "U1"}])
    except Exception:  # a template that cannot render a plain user turn is not one we can mirror
        return None
    head, sep, tail = bare.partition("<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\n")
    if not sep:
        return None
    default_system = None
    if head:
        prefix, suffix = "<|im_start|>system\n", "<|im_end|>\n"
        if not (head.startswith(prefix) and head.endswith(suffix)):
            return None
        default_system = head[len(prefix) : -len(suffix)]
    return ChatFormat(default_system, tail)


def go_template(fmt: ChatFormat) -> str:
    """The Go template Ollama renders per request (its .Messages hold role and content)."""
    default = ""
    if fmt.default_system is not None:
        default = (
            '{{- if and (eq $i 0) (ne $m.Role "system") }}<|im_start|>system\n'
            + _go_text(fmt.default_system)
            + "<|im_end|>\n{{ end }}"
        )
    return (
        "{{- range $i, $m := .Messages }}"
        + default
        + "{{- $last := eq (len (slice $.Messages $i)) 1 }}"
        + "<|im_start|>{{ $m.Role }}\n{{ $m.Content }}"
        # A final assistant message stays open so Ollama can continue it.
        + '{{- if or (ne $m.Role "assistant") (not $last) }}<|im_end|>\n{{ end }}'
        + '{{- if and $last (ne $m.Role "assistant") }}<|im_start|>assistant\n'
        + _go_text(fmt.generation_prompt)
        + "{{ end }}{{- end }}"
    )


def ollama_messages(messages: list[dict]) -> dict:
    """`messages` in the shape Ollama gives TEMPLATE (.Messages with Role and Content)."""
    return {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]}


def build_modelfile(
    tokenizer, gguf_name: str, stop_tokens: list[str], system: str | None = None, adapter: str | None = None
) -> str | None:
    """The Modelfile text, or None when the chat template is not one lorakit can mirror exactly.
    `gguf_name` is a file beside the Modelfile or an absolute path (a shared base); `adapter` a LoRA GGUF
    beside it, applied over that base (Ollama's ADAPTER)."""
    fmt = chatml_format(tokenizer)
    if fmt is None:
        return None
    template = go_template(fmt)
    _check_same_prompt(tokenizer, template)
    lines = [f"FROM {_local(gguf_name)}"] + ([f"ADAPTER {_local(adapter)}"] if adapter else [])
    lines += ["", f'TEMPLATE """{template}"""', ""]
    if system:  # the fixed system prompt the run trained with (data.system)
        lines += [f'SYSTEM """{system}"""', ""]
    lines += [f'PARAMETER stop "{_quoted(t)}"' for t in stop_tokens]
    lines += [f"PARAMETER {k} {v}" for k, v in SAMPLING_DEFAULTS.items()]
    lines += [f"PARAMETER repeat_penalty {REPEAT_PENALTY}", ""]
    return "\n".join(lines)


def _check_same_prompt(tokenizer, template: str) -> None:
    """Refuse to write a TEMPLATE that would prompt the model differently from training."""
    for messages in (_PROBE, _PROBE[1:], _PROBE[1:2]):
        want, got = hf_prompt(tokenizer, messages), render(template, ollama_messages(messages))
        if want != got:
            raise LorakitError(f"the Ollama TEMPLATE would render {got!r} where the chat template renders "
                               f"{want!r}; please report this model's chat template")  # fmt: skip


def _local(file: str) -> str:
    """Ollama resolves a relative FROM/ADAPTER against the Modelfile's folder."""
    return file if file.startswith("/") else f"./{file}"


def _go_text(text: str) -> str:
    if "{{" in text:  # a literal "{{" would start a Go action
        return text.replace("{{", '{{ "{{" }}')
    return text


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
