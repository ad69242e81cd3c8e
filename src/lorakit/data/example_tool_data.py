"""Write lorakit's example tool-use dataset: `python -m lorakit.data.example_tool_data [FOLDER]`.

Seeded, so the shipped files (assets/tools/train.jsonl, and test.jsonl: the held-out split) are exactly
what this writes.
Each record is an OpenAI-messages conversation with the three tools of example_tools.py and a `kind`:
- `single`: one call (a conversion, a calculation or a lookup), its result, the answer;
- `parallel`: two independent calls in one assistant turn, two results, the answer;
- `multi_step`: a lookup whose result feeds a calculation in a second assistant turn;
- `no_tool`: a question the assistant answers directly, tools listed all the same.
Every tool result is `call_tool`'s output. The held-out split uses other numbers, other element pairs
and its own no-tool questions, and no user question appears in both splits.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from pathlib import Path

from lorakit.atomic import write_text
from lorakit.data.example_tools import ASSET_DIR, TOOLS, UNIT_NAMES, UNITS, call_tool, elements

SEED = 20261207
# Records per kind and split; no-tool questions are written by hand, so each appears once.
COUNTS = {
    "train": {"single": 100, "parallel": 50, "multi_step": 50, "no_tool": 32},
    "test": {"single": 24, "parallel": 12, "multi_step": 12, "no_tool": 12},
}
SYSTEM = (
    "You are a helpful assistant. Call a tool when a question needs a unit conversion, a calculation "
    "or facts about a chemical element; otherwise answer directly."
)

# Questions that need no tool, with their answers; the last NO_TOOL_TEST are kept for held-out.
NO_TOOL = [
    (
        "Hello! Who are you?",
        "Hello! I am a helpful assistant. I can convert units, do arithmetic and look up chemical elements for you.",
    ),
    (
        "What can you help me with?",
        "I can convert units of length, mass, volume and temperature, evaluate "
        "arithmetic and look up facts about chemical elements.",
    ),
    ("Thank you, that was helpful.", "You're welcome! Ask me anytime."),
    ("What is a kilometre?", "A kilometre is a unit of length equal to 1000 metres."),
    (
        "What does a calculator do?",
        "A calculator evaluates arithmetic: it adds, subtracts, multiplies and divides numbers for you.",
    ),
    (
        "What is the periodic table?",
        "The periodic table arranges the chemical elements by atomic number, so that "
        "elements with similar properties fall into the same column.",
    ),
    ("Say good morning in French.", 'Good morning in French is "bonjour".'),
    ("Name three primary colours.", "Red, yellow and blue are the traditional primary colours."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many days are in a week?", "A week has seven days."),
    ("Write a one-line poem about the sea.", "The sea keeps every secret the moon has ever told it."),
    (
        "What is photosynthesis?",
        "Photosynthesis is how plants use light, water and carbon dioxide to make sugar and release oxygen.",
    ),
    ("Why is the sky blue?", "Air scatters blue sunlight more than red light, so the sky looks blue."),
    (
        "What is an atom?",
        "An atom is the smallest unit of a chemical element: a nucleus of protons and neutrons "
        "with electrons around it.",
    ),
    ("Give me a synonym for happy.", "Cheerful is a synonym for happy."),
    ("What language is spoken in Brazil?", "Portuguese is the official language of Brazil."),
    ("Is a tomato a fruit?", "Yes. Botanically a tomato is a fruit, though it is cooked like a vegetable."),
    ("How many continents are there?", "There are seven continents."),
    ("What is the opposite of cold?", "The opposite of cold is hot."),
    ("Tell me a fun fact about octopuses.", "An octopus has three hearts."),
    ("What does a thermometer measure?", "A thermometer measures temperature."),
    ("Can you recommend a good habit?", "Going for a short walk every day is a simple, healthy habit."),
    ("What is the largest planet in the solar system?", "Jupiter is the largest planet in the solar system."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    (
        "What is water made of?",
        "Water is made of hydrogen and oxygen: two hydrogen atoms and one oxygen atom per molecule.",
    ),
    ("How do I say thank you in Spanish?", 'Thank you in Spanish is "gracias".'),
    ("What is a metre?", "A metre is the SI base unit of length."),
    ("Goodbye!", "Goodbye! Have a nice day."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius at sea level."),
    ("Which gas do humans need to breathe?", "Humans need oxygen to breathe."),
    ("What is the square of a number?", "The square of a number is the number multiplied by itself."),
    ("Suggest a name for a pet cat.", "How about Pepper?"),
    ("What is the speed of light?", "Light travels at about 300,000 kilometres per second in a vacuum."),
    ("What does a chemist study?", "A chemist studies substances: what they are made of and how they react."),
    ("What is the freezing point of water?", "Water freezes at 0 degrees Celsius."),
    (
        "What is a prime number?",
        "A prime number is a whole number greater than 1 whose only divisors are 1 and itself.",
    ),
    ("Which planet is closest to the Sun?", "Mercury is the planet closest to the Sun."),
    ("What is gravity?", "Gravity is the force by which masses attract each other."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
    ("How many hours are in a day?", "A day has 24 hours."),
    (
        "What is a noble gas?",
        "A noble gas is an element of the periodic table's last column, such as helium or "
        "neon, which hardly reacts with anything.",
    ),
    ("What is the main ingredient of bread?", "Flour is the main ingredient of bread."),
    ("Can you tell me a joke?", "Why did the scarecrow win an award? Because he was outstanding in his field."),
    ("What is the largest ocean?", "The Pacific is the largest ocean."),
]
NO_TOOL_TEST = 12

CONVERT_QUESTIONS = [
    "Convert {v} {f} to {t}.",
    "How many {T} is {v} {F}?",
    "What is {v} {F} in {T}?",
    "Please convert {v} {F} into {T}.",
]
CALC_QUESTIONS = ["What is {e}?", "Calculate {e}.", "Compute {e} for me.", "Work out {e}."]
LOOKUP_FIELDS = {
    "atomic_number": ("What is the atomic number of {n}?", "The atomic number of {n} is {x}."),
    "atomic_mass": ("What is the atomic mass of {n}?", "The atomic mass of {n} is {x}."),
    "symbol": ("What is the chemical symbol for {n}?", "The chemical symbol for {n} is {x}."),
    "category": ("What kind of element is {n}?", "{N} is {a} {x}."),
}


class _Builder:
    """Builds one conversation, numbering calls call_0, call_1, ... and running every call."""

    def __init__(self, question: str):
        self.messages: list[dict] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
        self.count = 0

    def calls(self, *calls: tuple[str, dict], content: str = "") -> list[dict]:
        entries = []
        for name, args in calls:
            entries.append(
                {"id": f"call_{self.count}", "type": "function", "function": {"name": name, "arguments": args}}
            )
            self.count += 1
        self.messages.append({"role": "assistant", "content": content, "tool_calls": entries})
        results = []
        for e in entries:
            text = call_tool(e["function"]["name"], e["function"]["arguments"])
            self.messages.append({"role": "tool", "tool_call_id": e["id"], "content": text})
            results.append(json.loads(text))
        return results

    def answer(self, text: str) -> list[dict]:
        return self.messages + [{"role": "assistant", "content": text}]


def _quantity(rng: random.Random, kind: str | None = None) -> tuple[float, str, str]:
    kind = kind or rng.choice(list(UNITS))
    f, t = rng.sample([u[0] for u in UNITS[kind]], 2)
    value = rng.choice([rng.randint(1, 500), round(rng.uniform(0.5, 100), 1)])
    if kind == "temperature" and f == "K":
        value = rng.randint(200, 400)
    return value, f, t


def _unit(sym: str, value: float) -> str:
    one, many = UNIT_NAMES[sym]
    return one if value == 1 else many


def _convert(rng: random.Random, kind: str | None = None) -> tuple[str, tuple[str, dict], Callable[[dict], str]]:
    """(question, call, answer given the result) of one conversion."""
    v, f, t = _quantity(rng, kind)
    q = rng.choice(CONVERT_QUESTIONS).format(v=v, f=f, t=t, F=_unit(f, v), T=_unit(t, 2))

    def say(r):
        return f"{v} {_unit(f, v)} is {r['value']} {_unit(t, r['value'])}"

    return q, ("convert_units", {"value": v, "from_unit": f, "to_unit": t}), say


def _expression(rng: random.Random) -> str:
    a, b, c = rng.randint(2, 999), rng.randint(2, 99), rng.randint(2, 50)
    op1, op2 = rng.choice("+-*/"), rng.choice("+-*")
    return rng.choice(
        [f"{a} {op1} {b}", f"({a} {op1} {b}) {op2} {c}", f"{a} {op2} {b} {op2} {c}", f"{b} ** 2", f"{a}.5 * {c}"]
    )


def _single(rng: random.Random) -> list[dict]:
    pick = rng.choice(["convert", "calculate", "lookup"])
    if pick == "convert":
        q, call, say = _convert(rng)
        b = _Builder(q)
        (r,) = b.calls(call)
        return b.answer(say(r) + ".")
    if pick == "calculate":
        e = _expression(rng)
        b = _Builder(rng.choice(CALC_QUESTIONS).format(e=e))
        (r,) = b.calls(("calculate", {"expression": e}))
        return b.answer(f"{e} = {r['result']}.")
    name = rng.choice(_element_names())
    field = rng.choice(list(LOOKUP_FIELDS))
    question, answer = LOOKUP_FIELDS[field]
    b = _Builder(question.format(n=name))
    (r,) = b.calls(("lookup_element", {"element": name}))
    article = "an" if str(r[field])[0] in "aeiou" else "a"
    return b.answer(answer.format(n=name, N=name.capitalize(), x=r[field], a=article))


def _parallel(rng: random.Random) -> list[dict]:
    if rng.random() < 0.5:
        a, c = rng.sample(_element_names(), 2)
        b = _Builder(
            rng.choice(
                ["Compare the atomic masses of {a} and {c}.", "What are the atomic masses of {a} and {c}?"]
            ).format(a=a, c=c)
        )
        ra, rc = b.calls(("lookup_element", {"element": a}), ("lookup_element", {"element": c}))
        return b.answer(
            f"{a.capitalize()} has an atomic mass of {ra['atomic_mass']} and {c} of "
            f"{rc['atomic_mass']}, so {a if ra['atomic_mass'] > rc['atomic_mass'] else c} is heavier."
        )
    kinds = rng.sample(["length", "mass", "volume", "temperature"], 2)
    (_, c1, s1), (_, c2, s2) = _convert(rng, kinds[0]), _convert(rng, kinds[1])
    a1, a2 = c1[1], c2[1]
    b = _Builder(
        f"Convert {a1['value']} {a1['from_unit']} to {a1['to_unit']} and {a2['value']} "
        f"{a2['from_unit']} to {a2['to_unit']}."
    )
    r1, r2 = b.calls(c1, c2)
    return b.answer(f"{s1(r1)}, and {s2(r2)}.")


def _multi_step(rng: random.Random) -> list[dict]:
    name = rng.choice(_element_names())
    n = rng.randint(2, 12)
    b = _Builder(
        rng.choice(
            [
                "What is the mass of {n} atoms of {e} in atomic mass units?",
                "How much do {n} atoms of {e} weigh, in atomic mass units?",
            ]
        ).format(n=n, e=name)
    )
    (r,) = b.calls(("lookup_element", {"element": name}))
    expression = f"{r['atomic_mass']} * {n}"
    (total,) = b.calls(
        ("calculate", {"expression": expression}),
        content=f"The atomic mass of {name} is {r['atomic_mass']}; now I multiply it by {n}.",
    )
    return b.answer(f"{n} atoms of {name} weigh {total['result']} atomic mass units ({expression}).")


def _element_names() -> list[str]:
    return sorted({e["name"] for e in elements().values()})


def records(split: str, seed: int = SEED) -> list[dict]:
    """The records of `split` (train or test), in a seeded order."""
    rng = random.Random(f"{seed}-{split}")
    no_tool = NO_TOOL[:-NO_TOOL_TEST] if split == "train" else NO_TOOL[-NO_TOOL_TEST:]
    build = {"single": _single, "parallel": _parallel, "multi_step": _multi_step}
    # The held-out split avoids every question the train split asks.
    taken = {r["messages"][1]["content"] for r in records("train", seed)} if split == "test" else set()
    out, seen = [], set(taken)
    for kind, target in COUNTS[split].items():
        made = 0
        while made < target:
            if kind == "no_tool":
                q, a = no_tool[made % len(no_tool)]
                messages = [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": q},
                    {"role": "assistant", "content": a},
                ]
                out.append({"kind": kind, "tools": TOOLS, "messages": messages})
                made += 1
                continue
            messages = build[kind](rng)
            question = messages[1]["content"]
            if question in seen:
                continue
            seen.add(question)
            out.append({"kind": kind, "tools": TOOLS, "messages": messages})
            made += 1
    rng.shuffle(out)
    return out


def write(folder: Path = ASSET_DIR, seed: int = SEED) -> dict[str, Path]:
    """Write train.jsonl and test.jsonl into `folder` (atomically); returns their paths."""
    paths = {}
    for split in COUNTS:
        path = Path(folder) / f"{split}.jsonl"
        write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records(split, seed)))
        paths[split] = path
    return paths


if __name__ == "__main__":
    for split, path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else ASSET_DIR).items():
        print(f"{split}: {path}")
