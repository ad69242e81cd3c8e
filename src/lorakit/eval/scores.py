"""Rules that turn answers into counts: does an answer carry the persona, is a general answer right.

Both are plain keyword rules, printed with the results, so a reader can check every verdict by eye.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lorakit.data.language import has_cjk
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
# The same six for Chinese data, written the way a user of a Chinese role-play model would ask.
IDENTITY_QUESTIONS_ZH = [
    "你是谁？",
    "你叫什么名字？",
    "介绍一下你自己。",
    "你住在哪里？",
    "你平时都做些什么？",
    "用一句话介绍你自己。",
]


def identity_questions(language: str) -> list[str]:
    return IDENTITY_QUESTIONS_ZH if language == "zh" else IDENTITY_QUESTIONS


FACTS_FILE = "persona_facts.json"
RETENTION_FILE = Path(__file__).resolve().parents[1] / "assets" / "retention.json"

# A derived keyword must appear in at least this share of training answers and in no base answer.
DERIVE_MIN_SHARE = 0.10
DERIVE_MAX_KEYWORDS = 10
_WORD = re.compile(r"[^\W\d_][\w'-]*[^\W_]", re.UNICODE)
# Frequent English words that say nothing about a persona (words under 4 letters are ignored anyway).
_STOPWORDS = set(
    """
about above after again against also always another anything around away back because been before
being below between both came come could does doing done down during each even ever every first from
further give going good have having here hers herself himself into just keep know like little long
made make many more most much must myself never next night once only other ours ourselves over own
really right said same should since some still such sure take tell than that their theirs them
themselves then there these they thing things think this those though through time today under until
very want well were what when where which while whom whose will with without would year years your
yours yourself yourselves sometimes something someone people please thank thanks always nothing
""".split()
)


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
        return (
            f"an answer carries the persona if it contains (case-insensitive) any of: {shown} "
            f"(terms from {self.source})"
        )

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
    if (
        (name is not None and not isinstance(name, str))
        or not isinstance(keywords, list)
        or not all(isinstance(k, str) and k.strip() for k in keywords)
        or not (name or keywords)
    ):
        raise LorakitError(f'{path}: expected {{"name": "...", "keywords": ["...", ...]}}')
    return PersonaRule(name or None, [k.strip() for k in keywords], str(path))


def keywords_rule(keywords: list[str] | str, source: str = "--persona-keywords") -> PersonaRule:
    """A rule from --persona-keywords (a list, or one comma-separated string; ， works too) or the config."""
    if isinstance(keywords, str):
        keywords = keywords.replace("，", ",").split(",")
    keywords = [k.strip() for k in keywords if k.strip()]
    if not keywords:
        raise LorakitError(f"{source}: give at least one keyword, e.g. --persona-keywords 'Ada,Lovelace'")
    return PersonaRule(None, keywords, source)


# Chinese has no spaces: persona terms are character 2-grams inside runs of ideographs. Their
# share threshold is lower than for English words (a name recurs in fewer answers than a catchphrase),
# and common function n-grams are left out.
DERIVE_MIN_SHARE_ZH = 0.03
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]+")
_STOP_ZH = set(
    """
我们 你们 他们 她们 什么 一个 没有 不是 自己 这个 那个 这样 那样 怎么 可以 知道 就是 如何 还是 只是 已经 因为
所以 但是 可是 如果 虽然 这些 那些 时候 一定 一样 一些 不会 不能 不要 现在 今日 今天 这里 那里 不过 也是 都是
我的 你的 他的 她的 的人 了一 是我 是你 我也 你也 有什么 是什么 为什么 怎么样 一下 好的 是的 真是 便是 只有 之前
之后 起来 出来 下来 过来 心里 事情 东西 如此 还有 一直 罢了 而已 不必 不用 的事 的话 了吗 了呢 么呢
""".split()
)
_PARTICLES = set("的了吗呢吧啊么着过地得是在和与也都就又还")


def _cjk_terms(text: str) -> set[str]:
    """Character 2-grams inside runs of ideographs: most Chinese words, names and titles are two
    characters (甄嬛, 本宫, 皇上, 四郎); n-grams across word edges are rarer than the words themselves."""
    grams = {run[i : i + 2] for run in _CJK_RUN.findall(text) for i in range(len(run) - 1)}
    return {g for g in grams if g not in _STOP_ZH and g[0] not in _PARTICLES and g[1] not in _PARTICLES}


def _words(text: str) -> set[str]:
    latin = {w.lower() for w in _WORD.findall(text) if len(w) >= 4 and not has_cjk(w)}
    return (latin - _STOPWORDS) | _cjk_terms(text)


def candidate_keywords(training_answers: list[str], language: str = "en") -> list[str]:
    """Words (Chinese: character 2-grams) in at least DERIVE_MIN_SHARE (_ZH for Chinese) of the
    training answers, most frequent first.

    Counted once per answer (document frequency), so one long answer cannot dominate. Empty for a
    dataset with no recurring vocabulary, which is how non-persona data skips the persona score.
    """
    if not training_answers:
        return []
    share = Counter(w for answer in training_answers for w in _words(answer))
    need = (DERIVE_MIN_SHARE_ZH if language == "zh" else DERIVE_MIN_SHARE) * len(training_answers)
    return [w for w, n in sorted(share.items(), key=lambda kv: (-kv[1], kv[0])) if n >= need]


def derive_rule(candidates: list[str], base_answers: list[str]) -> PersonaRule | None:
    """Keep the candidate words that no base answer uses: what the fine-tune should have learned."""
    said = set().union(*(_words(a) for a in base_answers)) if base_answers else set()
    keywords = [w for w in candidates if w not in said][:DERIVE_MAX_KEYWORDS]
    if not keywords:
        return None
    return PersonaRule(
        None, keywords, "training answers: words (Chinese: 2-character n-grams) frequent in them and in no base answer"
    )


def score_persona(rule: PersonaRule, questions: list[str], base: list[str], tuned: list[str]) -> dict:
    """Per question, which persona terms each model's answer holds; totals of answers that hold any."""
    items = []
    for q, b, t in zip(questions, base, tuned):
        items.append(
            {
                "question": q,
                "base": b,
                "finetuned": t,
                "base_terms": rule.matches(b),
                "finetuned_terms": rule.matches(t),
            }
        )
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


def retention_file(language: str = "en") -> Path:
    """The bundled retention set for a language: retention.json (English), retention.zh.json."""
    return RETENTION_FILE if language == "en" else RETENTION_FILE.with_name(f"retention.{language}.json")


def load_retention(path: str | Path | None = None, language: str = "en") -> list[dict]:
    """Read retention questions: a JSON list of {question, answer, accept: [forms], reject: [forms]}.

    `keywords` (the older form) is read as `accept`. Without `path`, the bundled set for `language`.
    """
    path = Path(path) if path else retention_file(language)
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LorakitError(f"{path}: cannot read retention questions: {e}") from None
    if not isinstance(items, list):
        raise LorakitError(f"{path}: expected a JSON list of {{question, answer, accept, reject}}")
    out = []
    for i, item in enumerate(items):
        accept = item.get("accept", item.get("keywords")) if isinstance(item, dict) else None
        reject = item.get("reject", []) if isinstance(item, dict) else None
        ok = (
            isinstance(item, dict)
            and isinstance(item.get("question"), str)
            and item["question"].strip()
            and isinstance(accept, list)
            and accept
            and isinstance(reject, list)
            and all(isinstance(k, str) and k.strip() for k in accept + reject)
        )
        if not ok:
            raise LorakitError(
                f"{path}[{i}]: expected {{question, answer, accept: [non-empty strings], reject: [strings] (optional)}}"
            )
        out.append(
            {
                "question": item["question"],
                "answer": item.get("answer"),
                "accept": [k.strip() for k in accept],
                "reject": [k.strip() for k in reject],
            }
        )
    return out


RETENTION_RULE = (
    "strict: the first answer the reply commits to decides. Scanning left to right, the first mention of an "
    "accepted form (the answer or an alias, as a whole word; CJK forms as written), of a listed wrong answer, "
    "or, for a numeric answer, of any other number decides; mentions that repeat the question or are negated "
    '("not Paris", "不是") are skipped. So "5" does not count inside "15", and "London, not Paris" '
    "is wrong"
)

# English number words a reply may state a numeric answer in ("one" is left out: it is mostly a pronoun).
_NUMBER_WORDS = (
    "two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred "
    "thousand zero"
).split()
_NUMBER = re.compile(
    r"\d+(?:[.,]\d+)?|(?:(?<![A-Za-z])(?:%s)(?:[- ](?:%s))*(?![A-Za-z]))|[零〇二两三四五六七八九十百千万][零〇一二两三四五六七八九十百千万]*|一[零〇一二两三四五六七八九十百千万]+"  # noqa: E501
    % ("|".join(_NUMBER_WORDS), "|".join(_NUMBER_WORDS)),
    re.IGNORECASE,
)
# "not Paris", "isn't the Paris": a negation right before the form, at most one word between.
_NEGATION = re.compile(r"(?:\bnot|n't|\bnever|\bno)\s+(?:\w+\s+)?$", re.IGNORECASE)
_NEGATION_CJK = re.compile(r"(?:不是|并非|而非|并不是|不)$")


_WORD_VALUES = {
    w: v
    for v, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen".split()
    )
}
_WORD_VALUES.update(
    {
        "twenty": 20,
        "thirty": 30,
        "forty": 40,
        "fifty": 50,
        "sixty": 60,
        "seventy": 70,
        "eighty": 80,
        "ninety": 90,
        "hundred": 100,
        "thousand": 1000,
    }
)
_ZH_DIGITS = {c: i for i, c in enumerate("零一二三四五六七八九")} | {"〇": 0, "两": 2}


def _value(text: str) -> float | None:
    """The number a mention states: "100.0" and "one hundred" are 100, "二十四" is 24; None if unsure."""
    t = text.strip().lower().replace(",", "")
    try:
        return float(t)
    except ValueError:
        pass
    if re.fullmatch(r"[a-z]+(?:[- ][a-z]+)*", t):
        words = re.split(r"[- ]", t)
        if not all(w in _WORD_VALUES for w in words):
            return None
        total = 0
        for w in words:
            total = total * _WORD_VALUES[w] if w in ("hundred", "thousand") and total else total + _WORD_VALUES[w]
        return float(total)
    if all(c in _ZH_DIGITS or c in "十百" for c in t):  # up to 999, the range the bundled sets use
        total, digit = 0, 0
        for c in t:
            if c in _ZH_DIGITS:
                digit = _ZH_DIGITS[c]
            else:
                total += (digit or 1) * (10 if c == "十" else 100)
                digit = 0
        return float(total + digit)
    return None


def _is_numeric(item: dict) -> bool:
    return any(re.fullmatch(r"\d+(?:\.\d+)?", f) for f in item["accept"])


def _norm(text: str) -> str:
    return re.sub(r"[\s-]+", " ", text.strip().lower())


def _mentions(text: str, forms: list[str], kind: str) -> list[tuple[int, int, str, str]]:
    """(start, end, kind, form) of every whole-word (CJK: plain) occurrence of each form in `text`."""
    found = []
    for form in forms:
        pattern = re.escape(form)
        if not has_cjk(form):
            pattern = rf"(?<!\w){pattern}(?!\w)"
        found += [(m.start(), m.end(), kind, form) for m in re.finditer(pattern, text, flags=re.IGNORECASE)]
    return found


def _negated(text: str, start: int) -> bool:
    before = text[max(0, start - 16) : start]
    if has_cjk(text[start : start + 1]) or (before and has_cjk(before[-1:])):
        return bool(_NEGATION_CJK.search(before.rstrip()))
    return bool(_NEGATION.search(before))


def judge_retention(item: dict, reply: str) -> tuple[bool, str | None]:
    """Whether `reply` answers `item` right under RETENTION_RULE, and the mention that decided it."""
    item = {"reject": [], **item, "accept": item.get("accept") or item.get("keywords") or []}
    question = item["question"].lower()
    mentions = _mentions(reply, item["accept"], "accept") + _mentions(reply, item["reject"], "reject")
    if _is_numeric(item):
        accepted = {_value(f) for f in item["accept"]} - {None}
        asked = {_value(m.group(0)) for m in _NUMBER.finditer(item["question"])} - {None}
        for m in _NUMBER.finditer(reply):
            value = _value(m.group(0))
            if m.group(0) == "一" or value is None or value in asked:
                continue  # a lone 一 is mostly "a/one" (一个); a number of the question commits to nothing
            mentions.append((m.start(), m.end(), "accept" if value in accepted else "reject", m.group(0)))
    # Leftmost first; at one position the longest form wins ("水蒸气" over "水").
    for start, end, kind, _form in sorted(mentions, key=lambda m: (m[0], -(m[1] - m[0]))):
        said = reply[start:end]
        if kind == "reject" and _in_question(said, question):
            continue  # repeating the question ("10 minus 4 is 6") commits to nothing
        if has_cjk(said) and any(
            len(span) > len(said) and span.lower() in question
            for span in (reply[max(0, start - 1) : end], reply[start : end + 1])
        ):
            continue  # part of a word of the question: 蜜 in 蜜蜂, 鸡 in 鸡蛋
        if _negated(reply, start):
            continue
        return kind == "accept", said
    return False, None


def _in_question(said: str, question: str) -> bool:
    if has_cjk(said):
        return said.lower() in question
    return re.search(rf"(?<!\w){re.escape(said.lower())}(?!\w)", question) is not None


def score_retention(items: list[dict], base: list[str], tuned: list[str]) -> dict:
    """How many answers each model got right, and how many verdicts the fine-tune flipped."""
    rows = []
    for item, b, t in zip(items, base, tuned):
        (b_ok, b_said), (t_ok, t_said) = judge_retention(item, b), judge_retention(item, t)
        rows.append(
            {
                "question": item["question"],
                "answer": item.get("answer"),
                "accept": item.get("accept") or item.get("keywords"),
                "reject": item.get("reject", []),
                "base": b,
                "finetuned": t,
                "base_right": b_ok,
                "finetuned_right": t_ok,
                "base_decided_by": b_said,
                "finetuned_decided_by": t_said,
            }
        )
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
