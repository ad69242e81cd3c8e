"""docs/config.md, written from the config's own fields: every key with its type, default and description.

The config (lorakit/config.py) is the one source of truth for each default; this page is generated from
it, and tests/unit/test_config_reference.py fails when the two differ. Regenerate with:

    python -m lorakit.config_reference > docs/config.md
"""

from __future__ import annotations

import json
import typing
from typing import Any

from lorakit.config import PRESETS, RunConfig, field_docs

INTRO = """# Configuration reference

One YAML file with the sections below; any key can be overridden after the file as a dotted
`key=value` argument (`lorakit train CONFIG train.lr=2e-4 data.thinking=off`). Unknown keys and wrong
types stop the run before any heavy work, with one line naming the file (or the argument), line and key.

Generated from `src/lorakit/config.py` by `python -m lorakit.config_reference > docs/config.md`; a test
fails when this page and the config differ.
"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(str(a) if not isinstance(a, str) else a for a in typing.get_args(annotation))
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(annotation))}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(value: Any) -> str:
    return "null" if value is None else json.dumps(value, ensure_ascii=False)


def reference_markdown() -> str:
    lines = [INTRO.rstrip()]
    types = {}
    for section, field in RunConfig.model_fields.items():
        for name, f in field.annotation.model_fields.items():
            types[f"{section}.{name}"] = _type_name(f.annotation)
    current = None
    for key, default, description in field_docs():
        section = key.split(".")[0]
        if section != current:
            current = section
            lines += [f"\n## `{section}`\n", "| key | type | default | what it sets |", "|---|---|---|---|"]
        cell = description.replace("|", "\\|")  # a pipe inside a table cell must be escaped
        lines.append(f"| `{key}` | {types[key]} | `{_default(default)}` | {cell} |")
    lines += [
        "\n## Presets (`--preset NAME`)\n",
        "Named overrides applied after the file and before the command line's own `key=value` arguments.\n",
        "| preset | overrides |",
        "|---|---|",
    ]
    lines += [f"| `{name}` | {' '.join(f'`{o}`' for o in items)} |" for name, items in PRESETS.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")
