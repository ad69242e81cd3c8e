"""Rules that turn answers into counts: does an answer carry the persona, is a general answer right.

Both are plain keyword rules, printed with the results, so a reader can check every verdict by eye.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lorakit.errors import LorakitError

# Asked of both models to see whether the fine-tune speaks as the persona. Short and generic, so
# they fit any character; several match the demo's held-out questions, whose answers are then reused.
IDENTITY_QUESTIONS = [
    "Who are you?",
    "What is your name?",
    "Tell me about yourself.",
    "Where do you live?",
    "What do you do?",
    "Introduce yourself in one sentence.",
]

FACTS_FILE = "persona_facts.json"
RETENTION_FILE = Path(__file__).resolve().parents[1] / "assets" / "retention.json"

# A derived keyword must appear in at least this share of training answers and in no base answer.
DERIVE_MIN_SHARE = 0.10
DERIVE_MAX_KEYWORDS = 10
_WORD = re.compile(r"[^\W\d_][\w'-]*[^\W_]", re.UNICODE)
# Frequent English words that say nothing about a persona (words under 4 letters are ignored anyway).
_STOPWORDS = set("""
about above after again against also always another anything around away back because been before
being below between both came come could does doing done down during each even ever every first from
further give going good have having here hers herself himself into just keep know like little long
made make many more most much must myself never next night once only other ours ourselves over own
really right said same should since some still such sure take tell than that their theirs them
themselves then there these they thing things think this those though through time today under until
very want well were what when where which while whom whose will with without would year years your
yours yourself yourselves sometimes something someone people please thank thanks always nothing
""".split())


def find_terms(text: str, terms: list[str], whole_words: bool) -> list[str]:
    """The terms found in `text`, case-insensitive; with `whole_words`, "5" does not match "15"."""
    found = []
    for term in terms:
        pattern = re.escape(term)
        if whole_words:
            pattern = rf"(?<!\w){pattern}(?!\w)"
        if re.search(pattern, text, flags=re.IGNORECASE):
            found.append(term)
    return found


@dataclass
class PersonaRule:
    """Who the persona is, as far as the score is concerned, and where that came from."""

    name: str | None
    keywords: list[str]
    source: str
    terms: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.terms = ([self.name] if self.name else []) + [k for k in self.keywords if k != self.name]

    def describe(self) -> str:
        shown = ", ".join(f'"{t}"' for t in self.terms)
        return (f"an answer carries the persona if it contains (case-insensitive) any of: {shown} "
                f"(terms from {self.source})")

    def matches(self, answer: str) -> list[str]:
        return find_terms(answer, self.terms, whole_words=False)


def find_facts_file(folders: list[Path]) -> Path | None:
    """The first persona_facts.json in `folders` (the folders of the data files), if any."""
    for folder in folders:
        if (Path(folder) / FACTS_FILE).is_file():
            return Path(folder) / FACTS_FILE
    return None


def load_facts(path: Path) -> PersonaRule:
    """Read {"name": str, "keywords": [str, ...]} (either may be missing, not both)."""
    try:
        facts = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LorakitError(f"{path}: cannot read persona facts: {e}") from None
    name = facts.get("name") if isinstance(facts, dict) else None
    keywords = facts.get("keywords", []) if isinstance(facts, dict) else None
    if (name is not None and not isinstance(name, str)) or not isinstance(keywords, list) \
            or not all(isinstance(k, str) and k.strip() for k in keywords) or not (name or keywords):
        raise LorakitError(f'{path}: expected {{"name": "...", "keywords": ["...", ...]}}')
    return PersonaRule(name or None, [k.strip() for k in keywords], str(path))


def keywords_rule(keywords: list[str] | str) -> PersonaRule:
    """A rule from --persona-keywords (a list, or one comma-separated string)."""
    if isinstance(keywords, str):
        keywords = keywords.split(",")
    keywords = [k.strip() for k in keywords if k.strip()]
    if not keywords:
        raise LorakitError("--persona-keywords: give at least one keyword, e.g. --persona-keywords 'Ada,Lovelace'")
    return PersonaRule(None, keywords, "--persona-keywords")


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text) if len(w) >= 4} - _STOPWORDS


def candidate_keywords(training_answers: list[str]) -> list[str]:
    """Words in at least DERIVE_MIN_SHARE of the training answers, most frequent first.

    Counted once per answer (document frequency), so one long answer cannot dominate. Empty for a
    dataset with no recurring vocabulary, which is how non-persona data skips the persona score.
    """
    if not training_answers:
        return []
    share = Counter(w for answer in training_answers for w in _words(answer))
    need = DERIVE_MIN_SHARE * len(training_answers)
    return [w for w, n in sorted(share.items(), key=lambda kv: (-kv[1], kv[0])) if n >= need]


def derive_rule(candidates: list[str], base_answers: list[str]) -> PersonaRule | None:
    """Keep the candidate words that no base answer uses: what the fine-tune should have learned."""
    said = set().union(*(_words(a) for a in base_answers)) if base_answers else set()
    keywords = [w for w in candidates if w not in said][:DERIVE_MAX_KEYWORDS]
    if not keywords:
        return None
    return PersonaRule(None, keywords, f"training answers: words in >= {DERIVE_MIN_SHARE:.0%} of them "
                                       f"and in no base answer")


def score_persona(rule: PersonaRule, questions: list[str], base: list[str], tuned: list[str]) -> dict:
    """Per question, which persona terms each model's answer holds; totals of answers that hold any."""
    items = []
    for q, b, t in zip(questions, base, tuned):
        items.append({"question": q, "base": b, "finetuned": t,
                      "base_terms": rule.matches(b), "finetuned_terms": rule.matches(t)})
    return {
        "rule": rule.describe(),
        "name": rule.name,
        "keywords": rule.keywords,
        "source": rule.source,
        "n": len(items),
        "base_hits": sum(bool(i["base_terms"]) for i in items),
        "finetuned_hits": sum(bool(i["finetuned_terms"]) for i in items),
        "items": items,
    }


def load_retention(path: str | Path | None = None) -> list[dict]:
    """Read retention questions: a JSON list of {question, answer, keywords}."""
    path = Path(path) if path else RETENTION_FILE
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LorakitError(f"{path}: cannot read retention questions: {e}") from None
    if not isinstance(items, list):
        raise LorakitError(f"{path}: expected a JSON list of {{question, answer, keywords}}")
    for i, item in enumerate(items):
        ok = isinstance(item, dict) and isinstance(item.get("question"), str) and item["question"].strip() \
            and isinstance(item.get("keywords"), list) and item["keywords"] \
            and all(isinstance(k, str) and k for k in item["keywords"])
        if not ok:
            raise LorakitError(f"{path}[{i}]: expected {{question, answer, keywords: [non-empty strings]}}")
    return items


RETENTION_RULE = ("an answer is right if it contains one of the question's keywords as a whole word "
                  "(case-insensitive), so \"5\" does not count inside \"15\"")


def score_retention(items: list[dict], base: list[str], tuned: list[str]) -> dict:
    """How many answers each model got right, and how many verdicts the fine-tune flipped."""
    rows = []
    for item, b, t in zip(items, base, tuned):
        b_hit, t_hit = find_terms(b, item["keywords"], True), find_terms(t, item["keywords"], True)
        rows.append({"question": item["question"], "answer": item.get("answer"), "keywords": item["keywords"],
                     "base": b, "finetuned": t, "base_right": bool(b_hit), "finetuned_right": bool(t_hit)})
    lost = sum(r["base_right"] and not r["finetuned_right"] for r in rows)
    gained = sum(r["finetuned_right"] and not r["base_right"] for r in rows)
    return {
        "rule": RETENTION_RULE,
        "n": len(rows),
        "base_right": sum(r["base_right"] for r in rows),
        "finetuned_right": sum(r["finetuned_right"] for r in rows),
        "changed": lost + gained,
        "lost": lost,
        "gained": gained,
        "items": rows,
    }
