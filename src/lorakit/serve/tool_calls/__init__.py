"""Tool-call families: how a model writes calls, found from its chat template.

Each family is a module with `NAME`, `OPEN_TAG`, `writes_this_form(template)`, `parse(text)`,
`stream()` and `grammar(lark, tools, parallel)`. Adding a family (Llama 3.1's JSON, Mistral's
`[TOOL_CALLS]`) is one module and one line in `FAMILIES`; a template of another family is refused
in one line rather than served with tools it cannot parse.
"""

from __future__ import annotations

from types import ModuleType

from lorakit.serve.tool_calls import hermes
from lorakit.serve.tool_calls.base import CallStream, ParsedCall

FAMILIES: list[ModuleType] = [hermes]

__all__ = ["FAMILIES", "CallStream", "ParsedCall", "family_of", "UnknownFamily"]


class UnknownFamily(ValueError):
    """The chat template writes tool calls in a form no family here parses."""


def family_of(template: str, model: str) -> ModuleType:
    """The family whose form `template` renders calls in; UnknownFamily (one line naming `model`) otherwise."""
    for family in FAMILIES:
        if family.writes_this_form(template):
            return family
    known = ", ".join(f.NAME for f in FAMILIES)
    raise UnknownFamily(
        f"{model}: its chat template writes tool calls in a form this server does not parse "
        f"(it parses: {known}, the <tool_call> form of Qwen2.5 and Qwen3); "
        "serve it with --engine vllm, which has parsers for more families"
    )
