"""The three tools of lorakit's example tool-use dataset: their schemas and Python implementations.

- `convert_units(value, from_unit, to_unit)`: length, mass, volume and temperature units;
- `calculate(expression)`: arithmetic (+ - * / ** and parentheses) on numbers, nothing else;
- `lookup_element(element)`: one row of the shipped periodic-table extract (assets/tools/elements.tsv).

The dataset (assets/tools/train.jsonl, test.jsonl) is written by example_tool_data.py from these
implementations, so every tool result in it is what `call_tool` returns; an agent loop (eval, serve
tests) can execute the model's calls with the same function.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import operator
from functools import lru_cache
from pathlib import Path

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "tools"
# test.jsonl is the held-out split; its name makes `--data assets/tools/` read train.jsonl only.
TRAIN_FILE, TEST_FILE = ASSET_DIR / "train.jsonl", ASSET_DIR / "test.jsonl"
# SmolLM2's own template cannot render tools; this one adds the Hermes form to it (see the file's header).
SMOLLM2_TOOLS_TEMPLATE_FILE = ASSET_DIR / "smollm2_tools.jinja"

# Units per kind, as (symbol, singular name, plural name, factor to the kind's base unit).
UNITS: dict[str, list[tuple[str, str, str, float]]] = {
    "length": [
        ("m", "metre", "metres", 1.0),
        ("km", "kilometre", "kilometres", 1000.0),
        ("cm", "centimetre", "centimetres", 0.01),
        ("mm", "millimetre", "millimetres", 0.001),
        ("mi", "mile", "miles", 1609.344),
        ("yd", "yard", "yards", 0.9144),
        ("ft", "foot", "feet", 0.3048),
        ("in", "inch", "inches", 0.0254),
    ],
    "mass": [
        ("kg", "kilogram", "kilograms", 1.0),
        ("g", "gram", "grams", 0.001),
        ("lb", "pound", "pounds", 0.45359237),
        ("oz", "ounce", "ounces", 0.028349523125),
    ],
    "volume": [
        ("L", "litre", "litres", 1.0),
        ("mL", "millilitre", "millilitres", 0.001),
        ("gal", "US gallon", "US gallons", 3.785411784),
    ],
    "temperature": [
        ("C", "degree Celsius", "degrees Celsius", 0.0),
        ("F", "degree Fahrenheit", "degrees Fahrenheit", 0.0),
        ("K", "kelvin", "kelvins", 0.0),
    ],
}
UNIT_KIND = {sym: kind for kind, units in UNITS.items() for sym, *_ in units}
UNIT_NAMES = {sym: (one, many) for units in UNITS.values() for sym, one, many, _ in units}

TOOLS: list[dict] = [
    {
        "type": "function",
        "function": {
            "name": "convert_units",
            "description": "Convert a quantity between units of length, mass, volume or temperature.",
            "parameters": {
                "type": "object",
                "properties": {
                    "value": {"type": "number", "description": "The quantity to convert."},
                    "from_unit": {"type": "string", "enum": list(UNIT_KIND), "description": "The unit of value."},
                    "to_unit": {"type": "string", "enum": list(UNIT_KIND), "description": "The unit to convert to."},
                },
                "required": ["value", "from_unit", "to_unit"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "calculate",
            "description": "Evaluate an arithmetic expression with + - * / ** and parentheses.",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string", "description": "For example (3 + 4) * 2.5"}},
                "required": ["expression"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "lookup_element",
            "description": "Look up a chemical element: symbol, atomic number, atomic mass and category.",
            "parameters": {
                "type": "object",
                "properties": {"element": {"type": "string", "description": "The element's English name or symbol."}},
                "required": ["element"],
            },
        },
    },
]


class ToolError(ValueError):
    """A call the tool cannot answer; its message is what the tool returns as `{"error": ...}`."""


def number(x: float) -> float | int:
    """A result as people write it: at most 4 decimals, and whole numbers without a fraction."""
    r = round(float(x), 4)
    return int(r) if r == int(r) and abs(r) < 1e15 else r


def convert_units(value: float, from_unit: str, to_unit: str) -> dict:
    if from_unit not in UNIT_KIND or to_unit not in UNIT_KIND:
        raise ToolError(f"unknown unit {from_unit if from_unit not in UNIT_KIND else to_unit!r}")
    kind = UNIT_KIND[from_unit]
    if UNIT_KIND[to_unit] != kind:
        raise ToolError(f"cannot convert {kind} ({from_unit}) to {UNIT_KIND[to_unit]} ({to_unit})")
    if kind == "temperature":
        kelvin = {"C": value + 273.15, "F": (value - 32) * 5 / 9 + 273.15, "K": value}[from_unit]
        out = {"C": kelvin - 273.15, "F": (kelvin - 273.15) * 9 / 5 + 32, "K": kelvin}[to_unit]
    else:
        factor = {sym: f for sym, _, _, f in UNITS[kind]}
        out = value * factor[from_unit] / factor[to_unit]
    return {"value": number(out), "unit": to_unit}


_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def calculate(expression: str) -> dict:
    """Arithmetic only: the expression is parsed, never executed, so no name or call can run."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from None
    return {"result": number(_evaluate(tree.body))}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ToolError("exponent too large")
        if isinstance(node.op, ast.Div) and right == 0:
            raise ToolError("division by zero")
        result = _OPERATORS[type(node.op)](left, right)
        if isinstance(result, complex) or not math.isfinite(result):
            raise ToolError("the result is not a finite real number")
        return result
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.operand))
    raise ToolError("only numbers, + - * / ** and parentheses are allowed")


@lru_cache(maxsize=1)
def elements() -> dict[str, dict]:
    """The shipped table, keyed by lower-case name and symbol."""
    table: dict[str, dict] = {}
    # .tsv, not .csv: a data folder's reader skips it, so `--data assets/tools/` reads only conversations
    with open(ASSET_DIR / "elements.tsv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            entry = {
                "name": row["name"],
                "symbol": row["symbol"],
                "atomic_number": int(row["atomic_number"]),
                "atomic_mass": float(row["atomic_mass"]),
                "category": row["category"],
            }
            table[row["name"].lower()] = table[row["symbol"].lower()] = entry
    return table


def lookup_element(element: str) -> dict:
    entry = elements().get(element.strip().lower())
    if entry is None:
        raise ToolError(f"no element named {element!r} in the table")
    return dict(entry)


IMPLEMENTATIONS = {"convert_units": convert_units, "calculate": calculate, "lookup_element": lookup_element}


def call_tool(name: str, arguments: dict) -> str:
    """Run one call and return its result as the JSON text a `tool` turn carries (an error too)."""
    try:
        if name not in IMPLEMENTATIONS:
            raise ToolError(f"no tool named {name!r}")
        result = IMPLEMENTATIONS[name](**arguments)
    except (ToolError, TypeError) as e:
        result = {"error": str(e)}
    return json.dumps(result, ensure_ascii=False)
