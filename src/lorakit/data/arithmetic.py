"""A small verifiable task of our own for the GRPO demo: arithmetic word problems with integer answers,
and a format to answer in (the number between <answer> and </answer>).

Seeded, so the shipped files (src/lorakit/assets/arithmetic/) can be rebuilt exactly:
    python -m lorakit.data.arithmetic src/lorakit/assets/arithmetic
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SYSTEM = (
    "Solve the problem. Think step by step in one or two short sentences, then give the final number "
    "as <answer>NUMBER</answer>."
)
NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goro", "Hana", "Ivan", "Jia", "Kofi", "Lena"]
ITEMS = ["apples", "books", "coins", "pencils", "stickers", "marbles", "cookies", "shells"]


def problem(rng: random.Random) -> dict:
    """One word problem: {"prompt": text, "answer": "N"} with a non-negative integer N (the config's
    data.system carries SYSTEM, so the files hold the questions only)."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.choice(["add", "sub", "mul", "div"])
    if kind == "add":
        a, b = rng.randint(2, 30), rng.randint(2, 30)
        text, answer = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?", a + b
    elif kind == "sub":
        a = rng.randint(5, 40)
        b = rng.randint(1, a - 1)
        text, answer = f"{name} has {a} {item} and gives away {b}. How many {item} are left?", a - b
    elif kind == "mul":
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        text, answer = f"{name} buys {a} bags with {b} {item} in each bag. How many {item} is that in all?", a * b
    else:
        b, each = rng.randint(2, 6), rng.randint(2, 9)
        text, answer = (
            f"{name} shares {b * each} {item} equally among {b} friends. How many {item} does each friend get?",
            each,
        )
    return {"prompt": text, "answer": str(answer)}


def make(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [problem(rng) for _ in range(n)]


def write(folder: Path, train: int = 400, heldout: int = 100, seed: int = 0) -> None:
    """train.jsonl and heldout.jsonl; held-out problems never repeat a training question."""
    records = make(train, seed)
    seen = {r["prompt"] for r in records}
    extra = [r for r in make(heldout * 3, seed + 1) if r["prompt"] not in seen][:heldout]
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", records), ("heldout.jsonl", extra)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "src/lorakit/assets/arithmetic"))
