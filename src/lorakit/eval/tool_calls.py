"""The eval's tool-call phase: on held-out tool conversations, does the fine-tune call the right function
with the right arguments, and keep from calling when the answer needs no tool?

Every assistant turn of every held-out conversation that lists tools is one case. The prompt is the
turns before it with the conversation's tools, rendered by the chat template (`tools=`) as training
rendered it; both models answer greedily through the engine; the answer is parsed by the server's own
tool-call parser (lorakit.serve.tool_calls), so a call counts exactly when `lorakit serve` would send it
to a client as a `tool_calls` entry. Per model:
- on turns that call: the function names are right (`name_right`), and also the arguments equal the
  expected ones as JSON and are valid against the tool's schema (`args_right`); a turn with several
  (parallel) calls is right when its calls match as a set;
- on turns that answer in words: no call (`no_call_right`);
- `called`: turns that call when a call is expected; `malformed`: answers whose call text the parser
  refuses (the server returns those as plain content; here they count as a failed call).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from lorakit.data.conversation import Conversation, ToolCall
from lorakit.data.tools import arguments_problem, hermes_text, tool_schema

# Held-out turns shown in eval.json and the report: the first few where the two models differ.
SHOWN = 8


@dataclass
class Case:
    """One assistant turn to predict: the conversation up to it, its tools and the calls it made."""

    source: str
    turn: int  # 1-based index of the turn in the conversation
    prefix: Conversation
    expected: list[ToolCall]


@dataclass
class Verdict:
    """How one answer fared against its case."""

    called: bool
    malformed: bool = False
    name_right: bool = False
    args_right: bool = False
    problem: str | None = None  # why the call is wrong, for the report

    @property
    def right(self) -> bool:
        return self.problem is None


def cases_of(conversations: list[Conversation]) -> list[Case]:
    """Every assistant turn of the conversations that list tools, with the turns before it."""
    out = []
    for conv in conversations:
        if not conv.tools:
            continue
        for i, m in enumerate(conv.messages):
            if m.role == "assistant" and i > 0:
                out.append(
                    Case(conv.source, i + 1, Conversation(conv.messages[:i], conv.source, conv.tools), m.tool_calls)
                )
    return out


def judge_answer(parsed, expected: list[ToolCall], tools: list[dict]) -> Verdict:
    """The verdict of one answer; `parsed` is the tool-call parser's result: (content, calls) or None
    (call text it refuses). Each parsed call has `name` and `arguments` (JSON text)."""
    if parsed is None:
        return Verdict(called=True, malformed=True, problem="malformed call text")
    _, calls = parsed
    if not expected:
        return Verdict(called=bool(calls), problem="no call expected" if calls else None)
    if not calls:
        return Verdict(called=False, problem="no call")
    names = sorted(c.name for c in calls)
    if names != sorted(c.name for c in expected):
        return Verdict(called=True, problem=f"called {', '.join(names)}")
    got = []
    for c in calls:
        args = json.loads(c.arguments)
        why = arguments_problem(args, tool_schema(tools, c.name) or {})
        if why:
            return Verdict(called=True, name_right=True, problem=f"{c.name}: {why}")
        got.append(_canonical(c.name, args))
    if sorted(got) != sorted(_canonical(c.name, c.arguments) for c in expected):
        return Verdict(called=True, name_right=True, problem="other arguments")
    return Verdict(called=True, name_right=True, args_right=True)


def _canonical(name: str, arguments: dict) -> str:
    # JSON equality: key order does not matter, and 5 == 5.0 as in JSON Schema's own equality
    return json.dumps([name, _numbers(arguments)], sort_keys=True)


def _numbers(value):
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def summarise(cases: list[Case], verdicts: list[Verdict]) -> dict:
    """Counts and rates of one model's verdicts."""
    calling = [v for c, v in zip(cases, verdicts) if c.expected]
    answering = [v for c, v in zip(cases, verdicts) if not c.expected]
    counts = {
        "name_right": sum(v.name_right for v in calling),
        "args_right": sum(v.args_right for v in calling),
        "called": sum(v.called and not v.malformed for v in calling),
        "no_call_right": sum(not v.called for v in answering),
        "malformed": sum(v.malformed for v in verdicts),
    }
    rates = {
        "name_accuracy": _rate(counts["name_right"], len(calling)),
        "args_accuracy": _rate(counts["args_right"], len(calling)),
        "call_rate": _rate(counts["called"], len(calling)),
        "no_call_accuracy": _rate(counts["no_call_right"], len(answering)),
        "turn_accuracy": _rate(counts["args_right"] + counts["no_call_right"], len(verdicts)),
    }
    return counts | rates


def _rate(k: int, n: int) -> float | None:
    return k / n if n else None


def tool_call_scores(engine, conversations: list[Conversation], source: str, thinking: str, adapter: str,
                     max_new_tokens: int) -> dict | None:  # fmt: skip
    """The phase: base (adapter off) against `adapter` on every assistant turn of the tool conversations;
    None when no held-out conversation lists tools (not tool data: nothing to score)."""
    from lorakit.data.template import template_source
    from lorakit.serve.tool_calls import UnknownFamily, family_of

    cases = cases_of(conversations)
    if not cases:
        return None
    try:
        family = family_of(template_source(engine.tokenizer), engine.name)
    except UnknownFamily as e:
        return {"data": source, "skipped": str(e)}
    prompts, kept = _prompts(engine, cases, thinking)
    notes = []
    if len(kept) < len(cases):
        notes.append(f"{len(cases) - len(kept)} turns left out: their prompt does not fit the model's context")
    cases = [cases[i] for i in kept]
    texts, verdicts = {}, {}
    for side, name in (("base", None), ("finetuned", adapter)):
        texts[side] = _answers(engine, prompts, name, max_new_tokens)
        verdicts[side] = [judge_answer(family.parse(t), c.expected, c.prefix.tools) for t, c in zip(texts[side], cases)]
    calling = sum(bool(c.expected) for c in cases)
    return {
        "data": source,
        "parser": family.NAME,
        "turns": len(cases),
        "call_turns": calling,
        "answer_turns": len(cases) - calling,
        "max_new_tokens": max_new_tokens,
        "base": summarise(cases, verdicts["base"]),
        "finetuned": summarise(cases, verdicts["finetuned"]),
        "examples": _examples(cases, texts, verdicts),
        "notes": notes,
    }


def _prompts(engine, cases: list[Case], thinking: str) -> tuple[list[list[int]], list[int]]:
    """Token ids of each case's prompt (as training rendered its turns) and the indices of those that fit."""
    from lorakit.data.template import template_messages, uses_thinking
    from lorakit.inference.reasoning import thinking_flag

    prompts, kept = [], []
    for i, case in enumerate(cases):
        messages = template_messages(engine.tokenizer, case.prefix, uses_thinking(case.prefix, thinking))
        ids = engine.chat_prompt(messages, thinking_flag(thinking), tools=case.prefix.tools)
        if len(ids) < engine.max_context:
            prompts.append(ids)
            kept.append(i)
    return prompts, kept


def _answers(engine, prompts: list[list[int]], adapter: str | None, max_new_tokens: int) -> list[str]:
    from lorakit.inference.engine import SamplingParams

    greedy = SamplingParams(temperature=0, max_new_tokens=max_new_tokens)
    return [a.text for a in engine.answer_rendered(prompts, greedy, adapter)]


def _examples(cases: list[Case], texts: dict, verdicts: dict) -> list[dict]:
    """The first SHOWN turns where the models' verdicts differ (else the first ones): for the report."""
    differ = [i for i in range(len(cases)) if verdicts["base"][i].right != verdicts["finetuned"][i].right]
    picked = (differ + [i for i in range(len(cases)) if i not in differ])[:SHOWN]
    out = []
    for i in sorted(picked):
        c = cases[i]
        last_user = next((m.content for m in reversed(c.prefix.messages) if m.role == "user"), "")
        out.append(
            {
                "source": c.source,
                "turn": c.turn,
                "question": last_user,
                "expected": hermes_text(c.expected) if c.expected else "(an answer without a call)",
                **{
                    side: {
                        "text": texts[side][i],
                        "right": verdicts[side][i].right,
                        "problem": verdicts[side][i].problem,
                    }
                    for side in ("base", "finetuned")
                },
            }
        )
    return out
