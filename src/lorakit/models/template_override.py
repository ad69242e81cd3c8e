"""`model.chat_template`: a chat template that replaces the model's own, for training and after it.

A model whose template cannot render tools (SmolLM2-Instruct's) can still learn to call them with a
template that can. The run's tokenizer gets the replacement before any data is rendered; training saves
that tokenizer in the adapter folder, and every later stage (chat, serve, eval, merge and so export)
takes the template from there, so they render prompts exactly as training did without being told again.

The value is a `.jinja` file (a relative path is anchored to the config file's folder when the config is
read) or the name of a template shipped with lorakit (SHIPPED).
"""

from __future__ import annotations

import json
from pathlib import Path

from lorakit.errors import LorakitError

FIELD = "model.chat_template"
_ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHIPPED = {"smollm2-tools": _ASSETS / "tools" / "smollm2_tools.jinja"}


def read_chat_template(value: str) -> str:
    """The template text `value` names; a one-line LorakitError naming the field when it is unusable."""
    from lorakit.config import is_template_name

    shipped = ", ".join(SHIPPED)
    if is_template_name(value) and value not in SHIPPED:
        raise LorakitError(f"{FIELD}: {value!r} is not a template shipped with lorakit ({shipped}) nor a .jinja file")
    path = SHIPPED.get(value) or Path(value).expanduser()
    if not path.is_file():
        raise LorakitError(
            f"{FIELD}: {value}: no such file (give a .jinja file, relative to the config file, or a template "
            f"shipped with lorakit: {shipped})"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LorakitError(f"{FIELD}: {path}: not UTF-8 text") from None
    if not text.strip():
        raise LorakitError(f"{FIELD}: {path}: the file is empty")
    _check_syntax(text, path)
    return text


def _check_syntax(text: str, path: Path) -> None:
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    try:
        ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"]).parse(text)
    except TemplateSyntaxError as e:
        raise LorakitError(f"{FIELD}: {path}:{e.lineno}: not a Jinja template: {e.message}") from None


def apply_chat_template(tokenizer, value: str | None):
    """`tokenizer` with the template `value` names in place of its own (unchanged when `value` is None)."""
    if value:
        tokenizer.chat_template = read_chat_template(value)
    return tokenizer


def saved_chat_template(folder: Path) -> str | None:
    """The chat template a tokenizer saved in `folder` carries (chat_template.jinja, else a plain string in
    tokenizer_config.json); None when the folder holds none."""
    folder = Path(folder)
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = folder / "tokenizer_config.json"
    if config.is_file():
        tpl = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        return tpl if isinstance(tpl, str) else None
    return None


def use_adapter_template(tokenizer, folders: list[Path]):
    """`tokenizer` (the base model's) with the template its adapters were trained with, when that differs.

    Adapters trained without `model.chat_template` saved the base's own template, so nothing changes for
    them. Adapters loaded side by side share one tokenizer, so they must agree on the template.
    """
    if not isinstance(tokenizer.chat_template, (str, type(None))):
        return tokenizer  # named templates (a dict): lorakit never writes those, so nothing was replaced
    found = {}
    for folder in folders:
        tpl = saved_chat_template(folder)
        if tpl is not None and tpl != tokenizer.chat_template:
            found.setdefault(tpl, folder)
    if len(found) > 1:
        a, b = list(found.values())[:2]
        raise LorakitError(
            f"{a} and {b}: the adapters were trained with different chat templates ({FIELD}); "
            "serve or load them separately"
        )
    if found:
        tokenizer.chat_template = next(iter(found))
    return tokenizer
