"""Small verifiable tasks of our own for GRPO: arithmetic with integer answers, at two levels.

- `words` (train.jsonl, heldout.jsonl): one-step word problems, four operations, numbers up to 40.
- `easy` (easy_train.jsonl, easy_heldout.jsonl): "What is 7 + 5?" and "What is 13 - 6?", numbers up
  to 12 (up to 20 for the first number of a difference). The CPU demo trains on this level: SmolLM2-135M
  so rarely got a word problem's number right that the answer reward gave GRPO no signal.

Seeded, so the shipped files (src/lorakit/assets/arithmetic/) can be rebuilt exactly:
    python -m lorakit.data.arithmetic src/lorakit/assets/arithmetic [--level words|easy|all]
"""

from __future__ import annotations

import argparse
import json
import random
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


def easy_questions() -> list[dict]:
    """Every question of the easy level, in a fixed order: a + b for a, b in 1..12, and a - b for
    b in 1..12 and a in b+1..20 (so the answer is positive). 144 + 162 = 306 questions."""
    rows = [{"prompt": f"What is {a} + {b}?", "answer": str(a + b)} for a in range(1, 13) for b in range(1, 13)]
    rows += [{"prompt": f"What is {a} - {b}?", "answer": str(a - b)} for b in range(1, 13) for a in range(b + 1, 21)]
    return rows


def make_easy(train: int, heldout: int, seed: int) -> tuple[list[dict], list[dict]]:
    """The easy level split: `heldout` questions set aside, then `train` draws (with replacement) from
    the rest, each question kept once, in the order first drawn (400 draws give 169 distinct questions;
    lorakit's loader would drop the repeats anyway). A held-out question never appears in training."""
    rows = easy_questions()
    rng = random.Random(seed)
    rng.shuffle(rows)
    held, pool = rows[:heldout], rows[heldout:]
    drawn = {}  # prompt -> record; a dict keeps the order of first insertion
    for _ in range(train):
        record = rng.choice(pool)
        drawn.setdefault(record["prompt"], record)
    return list(drawn.values()), held


def _write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write(folder: Path, train: int = 400, heldout: int = 100, seed: int = 0, level: str = "words") -> None:
    """Write one level's two files into `folder`; held-out problems never repeat a training question.

    words: train.jsonl, heldout.jsonl; easy: easy_train.jsonl, easy_heldout.jsonl."""
    if level == "easy":
        records, extra = make_easy(train, heldout, seed)
        names = ("easy_train.jsonl", "easy_heldout.jsonl")
    elif level == "words":
        records = make(train, seed)
        seen = {r["prompt"] for r in records}
        extra = [r for r in make(heldout * 3, seed + 1) if r["prompt"] not in seen][:heldout]
        names = ("train.jsonl", "heldout.jsonl")
    else:
        raise ValueError(f"unknown arithmetic level {level!r}: use words or easy")
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in zip(names, (records, extra)):
        _write_rows(folder / name, rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write lorakit's arithmetic task files.")
    parser.add_argument("folder", nargs="?", default="src/lorakit/assets/arithmetic", type=Path)
    parser.add_argument("--level", choices=["words", "easy", "all"], default="all")
    args = parser.parse_args()
    for level in ("words", "easy") if args.level == "all" else (args.level,):
        write(args.folder, level=level)
