"""A renderer for the subset of Go's text/template that lorakit's Modelfile TEMPLATE uses.

Ollama renders TEMPLATE with Go; Ollama is not installable here, so export renders the template it
wrote with this and compares the result with the Hugging Face chat template before it ships the
Modelfile. Supported: text, `{{- -}}` trimming, `.Field`, `$`, `$var`, `$var.Field`, string, integer and boolean
literals, parentheses, `if / else if / else / end`, `range $i, $m := ...`, `$x := ...`, and the
functions eq, ne, and, or, not, len, slice, index. Anything else is a TemplateError.
"""

from __future__ import annotations

import re

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r'\s*(\(|\)|"(?:[^"\\]|\\.)*"|[^\s()]+)')


class TemplateError(ValueError):
    pass


def render(template: str, data: dict) -> str:
    parts = _lex(template)
    nodes, rest = _parse(parts, 0, ())
    if rest != len(parts):
        raise TemplateError("unexpected {{end}} or {{else}}")
    out: list[str] = []
    _run(nodes, data, {"$": data}, out)
    return "".join(out)


def _lex(template: str) -> list[tuple[str, str]]:
    """[("text", s) | ("action", s)], with `{{-` / `-}}` whitespace trimming applied to the text."""
    parts: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    for m in _ACTION.finditer(template):
        text = template[pos : m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        if text:
            parts.append(("text", text))
        parts.append(("action", m.group(2).strip()))
        trim_next, pos = bool(m.group(3)), m.end()
    text = template[pos:]
    if trim_next:
        text = text.lstrip()
    if text:
        parts.append(("text", text))
    return parts


def _parse(parts, i: int, stops: tuple[str, ...]):
    """Nodes until one of `stops` ("end", "else"); returns (nodes, index of the stop)."""
    nodes = []
    while i < len(parts):
        kind, body = parts[i]
        word = body.split(None, 1)[0] if kind == "action" and body else ""
        if kind == "text":
            nodes.append(("text", body))
        elif word in ("end", "else") and stops:
            return nodes, i
        elif word == "if":
            node, i = _parse_if(parts, i, body[2:].strip())
            nodes.append(node)
        elif word == "range":
            m = re.fullmatch(r"range\s+(\$\w+)\s*,\s*(\$\w+)\s*:=\s*(.+)", body, re.S)
            if not m:
                raise TemplateError(f"unsupported range: {body}")
            inner, i = _parse(parts, i + 1, ("end",))
            if parts[i][1] != "end":
                raise TemplateError("range without end")
            nodes.append(("range", m.group(1), m.group(2), m.group(3), inner))
        elif re.match(r"\$\w+\s*:=", body):
            name, expr = body.split(":=", 1)
            nodes.append(("set", name.strip(), expr.strip()))
        else:
            nodes.append(("print", body))
        i += 1
    if stops:
        raise TemplateError("missing {{end}}")
    return nodes, i


def _parse_if(parts, i: int, cond: str):
    then, i = _parse(parts, i + 1, ("end", "else"))
    body = parts[i][1]
    if body == "end":
        return ("if", cond, then, []), i
    if body.startswith("else if "):
        other, i = _parse_if(parts, i, body[len("else if ") :])
        return ("if", cond, then, [other]), i
    other, i = _parse(parts, i + 1, ("end",))
    return ("if", cond, then, other), i


def _run(nodes, dot, scope: dict, out: list[str]) -> None:
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "print":
            value = _eval(node[1], dot, scope)
            out.append("" if value is None else str(value))
        elif kind == "set":
            scope[node[1]] = _eval(node[2], dot, scope)
        elif kind == "if":
            _run(node[2] if _truthy(_eval(node[1], dot, scope)) else node[3], dot, scope, out)
        elif kind == "range":
            _, index_var, item_var, expr, inner = node
            for index, item in enumerate(_eval(expr, dot, scope) or []):
                _run(inner, item, {**scope, index_var: index, item_var: item}, out)


def _eval(expr: str, dot, scope: dict):
    tokens = _TOKEN.findall(expr)
    value, pos = _pipeline(tokens, 0, dot, scope)
    if pos != len(tokens):
        raise TemplateError(f"cannot parse {expr!r}")
    return value


def _pipeline(tokens, pos, dot, scope):
    """A command: a function applied to arguments, or a single operand."""
    first = tokens[pos]
    if first in _FUNCS:
        args = []
        pos += 1
        while pos < len(tokens) and tokens[pos] != ")":
            arg, pos = _operand(tokens, pos, dot, scope)
            args.append(arg)
        return _FUNCS[first](*args), pos
    return _operand(tokens, pos, dot, scope)


def _operand(tokens, pos, dot, scope):
    tok = tokens[pos]
    if tok == "(":
        value, pos = _pipeline(tokens, pos + 1, dot, scope)
        if pos >= len(tokens) or tokens[pos] != ")":
            raise TemplateError("unbalanced parentheses")
        return value, pos + 1
    if tok.startswith('"'):
        return tok[1:-1].encode().decode("unicode_escape"), pos + 1
    if tok in ("true", "false"):
        return tok == "true", pos + 1
    if re.fullmatch(r"-?\d+", tok):
        return int(tok), pos + 1
    if tok.startswith("$"):
        head, _, fields = tok.partition(".")
        if head not in scope:
            raise TemplateError(f"undefined variable {head}")
        return _fields(scope[head], fields), pos + 1
    if tok.startswith("."):
        return _fields(dot, tok[1:]), pos + 1
    raise TemplateError(f"unsupported operand {tok!r}")


def _fields(value, path: str):
    for name in filter(None, path.split(".")):
        value = value.get(name) if isinstance(value, dict) else getattr(value, name)
    return value


def _truthy(value) -> bool:
    return bool(value)


_FUNCS = {
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
    "and": lambda *a: next((x for x in a if not _truthy(x)), a[-1]),
    "or": lambda *a: next((x for x in a if _truthy(x)), a[-1]),
    "not": lambda a: not _truthy(a),
    "len": len,
    "slice": lambda seq, start=0, end=None: seq[start:end],
    "index": lambda seq, i: seq[i],
}
