"""The eval stage's pure parts: prompt files, persona and retention rules, judge parsing, the report."""

import json
import re

import pytest

from lorakit.data.conversation import Conversation, Message
from lorakit.errors import LorakitError
from lorakit.eval import judge, scores
from lorakit.eval.prompts import load_prompts, prompts_from_conversations
from lorakit.eval.report import render_report


# ---- prompts ---------------------------------------------------------------------------------
def test_prompts_from_json_strings_and_alpaca_records(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(
        json.dumps(
            [
                "Who are you?",
                {"instruction": "Summarise", "input": "a long text", "output": "short"},
                {"question": "What is 2 + 3?", "answer": "5"},
            ]
        )
    )
    got = load_prompts(f, system="Be brief.")
    assert [p.text for p in got] == ["Who are you?", "Summarise\n\na long text", "What is 2 + 3?"]
    assert [p.reference for p in got] == [None, "short", "5"]
    assert got[0].messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who are you?"}]


def test_prompts_from_jsonl_and_text(tmp_path):
    jl = tmp_path / "p.jsonl"
    jl.write_text('"first"\n\n{"prompt": "second", "completion": "2"}\n')
    assert [(p.text, p.reference) for p in load_prompts(jl)] == [("first", None), ("second", "2")]
    txt = tmp_path / "p.txt"
    txt.write_text("one\n\n  two  \n")
    got = load_prompts(txt)
    assert [p.text for p in got] == ["one", "two"]
    assert got[0].messages == [{"role": "user", "content": "one"}]


@pytest.mark.parametrize(
    "name,content,where",
    [
        ("bad.json", '[\n"a",\n', "bad.json:3"),
        ("bad.jsonl", '"a"\n{oops}\n', "bad.jsonl:2"),
        ("rec.json", '[{"output": "no question"}]', "rec.json[0]"),
        ("empty.txt", "\n\n", "no prompts"),
    ],
)
def test_bad_prompt_files_name_the_place(tmp_path, name, content, where):
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(LorakitError, match=re.escape(where)):
        load_prompts(f)


def test_prompts_from_conversations_use_last_answer_as_reference():
    convs = [
        Conversation([Message("system", "S"), Message("user", "Q1"), Message("assistant", "A1")], "f:1"),
        Conversation(
            [Message("user", "Q2"), Message("assistant", "A2"), Message("user", "Q3"), Message("assistant", "A3")],
            "f:2",
        ),
        Conversation([Message("user", "Q4"), Message("assistant", "A4")], "f:3"),
    ]
    got = prompts_from_conversations(convs, cap=2)
    assert [(p.text, p.reference) for p in got] == [("Q1", "A1"), ("Q3", "A3")]
    assert got[0].messages[0] == {"role": "system", "content": "S"}
    assert [m["content"] for m in got[1].messages] == ["Q2", "A2", "Q3"]


# ---- persona ---------------------------------------------------------------------------------
def test_find_terms_whole_words_and_case():
    assert scores.find_terms("It is 15.", ["5", "15"], whole_words=True) == ["15"]
    assert scores.find_terms("PARIS, of course", ["paris"], whole_words=True) == ["paris"]
    assert scores.find_terms("twenty-four hours", ["twenty-four"], whole_words=True) == ["twenty-four"]
    assert scores.find_terms("By the Beam!", ["by the beam"], whole_words=False) == ["by the beam"]


def test_facts_file_beside_data(tmp_path):
    (tmp_path / "persona_facts.json").write_text(json.dumps({"name": "Ada Quill", "keywords": ["Quill", "inkwell"]}))
    found = scores.find_facts_file([tmp_path / "nowhere", tmp_path])
    rule = scores.load_facts(found)
    assert rule.terms == ["Ada Quill", "Quill", "inkwell"]
    assert rule.matches("I am ada quill.") == ["Ada Quill", "Quill"]
    assert "Ada Quill" in rule.describe() and "persona_facts.json" in rule.describe()


def test_bad_facts_file_is_one_line_error(tmp_path):
    f = tmp_path / "persona_facts.json"
    f.write_text(json.dumps({"name": 3}))
    with pytest.raises(LorakitError, match="persona_facts.json"):
        scores.load_facts(f)


def test_keywords_option_accepts_comma_string():
    rule = scores.keywords_rule(" Ada, Quill ,")
    assert rule.terms == ["Ada", "Quill"] and rule.source == "--persona-keywords"
    with pytest.raises(LorakitError):
        scores.keywords_rule(",")


def test_derived_keywords_are_frequent_in_training_and_absent_from_base():
    training = [f"Ahoy! I'm Zorblax of Lampton, answer {i}." for i in range(8)] + ["Plain reply."] * 2
    candidates = scores.candidate_keywords(training)
    assert {"ahoy", "zorblax", "lampton", "answer"} <= set(candidates)
    rule = scores.derive_rule(candidates, ["I am an AI assistant; ask me for an answer."])
    assert rule is not None and "answer" not in rule.keywords and "zorblax" in rule.keywords
    assert rule.matches("ZORBLAX here") == ["zorblax"]


def test_generic_data_has_no_persona():
    training = ["The sum is four.", "Paris is the capital.", "Use a loop over the list.", "Water boils at 100 C."] * 3
    assert (
        scores.candidate_keywords(training[:4]) == []
        or scores.derive_rule(scores.candidate_keywords(training), training) is None
    )


def test_score_persona_counts_answers_with_any_term():
    rule = scores.PersonaRule("Ada", ["inkwell"], "test")
    got = scores.score_persona(rule, ["Who?", "Where?"], ["An assistant.", "Nowhere."], ["Ada!", "By my inkwell."])
    assert (got["base_hits"], got["finetuned_hits"], got["n"]) == (0, 2, 2)
    assert got["items"][1]["finetuned_terms"] == ["inkwell"]


# ---- retention -------------------------------------------------------------------------------
def test_retention_counts_lost_and_gained(tmp_path):
    items = scores.load_retention()  # the bundled questions load and validate
    assert items and all(i["accept"] for i in items)
    # the older {keywords} form still scores, as accepted forms
    qs = [
        {"question": "2+3?", "keywords": ["5", "five"]},
        {"question": "Capital of France?", "keywords": ["paris"]},
        {"question": "Sky?", "keywords": ["blue"]},
    ]
    got = scores.score_retention(qs, ["It is 5.", "Paris.", "Grey."], ["It is 15.", "paris!", "Blue, love."])
    assert (got["base_right"], got["finetuned_right"], got["lost"], got["gained"], got["changed"]) == (2, 2, 1, 1, 2)
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps([{"question": "x", "keywords": []}]))
    with pytest.raises(LorakitError, match=r"r.json\[0\]"):
        scores.load_retention(bad)


# ---- judge -----------------------------------------------------------------------------------
def test_judge_prompt_and_score_parsing():
    text = judge.judge_prompt("Who are you?", "I am Ada.", "Ada Quill.")
    assert "Who are you?" in text and "I am Ada." in text and "Ada Quill." in text
    assert "reference" not in judge.judge_prompt("Q", "A", None)
    assert judge.parse_score("Score: 8/10") == 8
    assert judge.parse_score("10") == 10
    assert judge.parse_score("eleven out of 100") is None
    assert judge.parse_score(None) is None
    assert judge.api_base("http://h:1") == "http://h:1/v1"
    assert judge.api_base("http://h:1/v1/") == "http://h:1/v1"
    assert judge.api_base("https://api.x.com/compat/v2") == "https://api.x.com/compat/v2"


# ---- report ----------------------------------------------------------------------------------
def _result(evil: str) -> dict:
    side = {"greedy": evil, "sampled": "I am Ada, by my inkwell."}
    return {
        "run_dir": "/runs/r1",
        "base_model": "tiny",
        "adapter": "/runs/r1/adapter",
        "created": "now",
        "settings": {
            "max_new_tokens": 8,
            "seed": 0,
            "prompts_source": "p.txt",
            "greedy": {"temperature": 0},
            "sampled": {"temperature": 0.7, "top_p": 0.9, "seed": 0},
        },
        "loss": {
            "data": "held.json",
            "samples": 2,
            "supervised_tokens": 20,
            "base": {"loss": 2.5, "ppl": 12.18},
            "finetuned": {"loss": 1.5, "ppl": 4.48},
        },
        "answers": [{"prompt": "<b>hi</b>", "reference": None, "base": side, "finetuned": side}],
        "persona": scores.score_persona(scores.PersonaRule("Ada", ["inkwell"], "test"), ["Who?"], [evil], ["Ada"]),
        "retention": scores.score_retention([{"question": "Sky?", "keywords": ["blue"]}], ["blue"], [evil]),
        "judge": {
            "url": "http://j",
            "model": "m",
            "prompt_template": judge.JUDGE_PROMPT,
            "error": None,
            "items": [{"prompt": "<b>hi</b>", "base_score": 3, "finetuned_score": 7}],
            "base_mean": 3.0,
            "finetuned_mean": 7.0,
            "base_scored": 1,
            "finetuned_scored": 1,
            "n": 1,
        },
        "notes": [],
        "timing": {"total_s": 1.0},
    }


def test_report_escapes_model_text_and_needs_no_network():
    evil = "<script>alert('x')</script> & <img src=http://evil/x.png>"
    metrics = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"step": 2, "eval_loss": 2.2}]
    page = render_report(_result(evil), metrics)
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp;" in page
    assert "&lt;b&gt;hi&lt;/b&gt;" in page
    assert "<svg" in page and "<mark>Ada</mark>" in page and "<mark>inkwell</mark>" in page
    # Self-contained: nothing is fetched (no external src/href, no stylesheet or font links).
    assert not re.search(r"""<[^<>]*\b(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page
    assert "Rule: an answer carries the persona" in page and "Reply with the number only." in page


def test_report_without_metrics_or_loss():
    result = _result("plain")
    result["loss"] = {"data": "none", "skipped": "the run has no held-out data"}
    result["judge"] = None
    page = render_report(result, [])
    assert "no metrics.jsonl" in page and "the run has no held-out data" in page and "Judge" not in page


# ---- forgetting: advice and the demo job's trade-off chart -------------------------------------
def test_advice_only_when_retention_fell_by_two_or_more():
    from lorakit.eval.tradeoff import advice

    kept = {"n": 24, "base_right": 15, "finetuned_right": 14}
    assert advice(kept, 0) is None
    kept["finetuned_right"] = 10
    assert "fell by 5 of 24" in advice(kept, 0) and "data.replay=0.25" in advice(kept, 0)
    assert "larger data.replay than 0.25" in advice(kept, 0.25)
    assert advice({"skipped": "no questions"}, 0) is None


def test_report_places_a_demo_model_run_on_the_measured_tradeoff():
    from lorakit.eval.tradeoff import load_levers

    levers = load_levers()
    chosen = [r for r in levers["rows"] if r["chosen"]]
    assert len(chosen) == 1 and levers["base"]["n"] == 24  # the bundled measurements, one default starred
    result = _result("plain")
    result["retention"]["advice"] = "Retention fell by 5 of 24 general questions."
    page = render_report(result, [])
    assert "Persona against retention" not in page and "Retention fell by 5" in page
    result["tradeoff_point"] = {"persona": "11/12", "retention": "16/24"}
    page = render_report(result, [])
    assert "Persona against retention" in page and page.count("<svg") == 1  # the chart (no loss curves here)


def test_tradeoff_point_and_advice_figures_come_from_the_levers_file():
    import copy

    from lorakit.eval.tradeoff import advice, load_levers, tradeoff_point

    levers = load_levers()
    persona = {"side_by_side": {"n": 12, "finetuned_hits": 10}}
    kept = {"n": 24, "base_right": 15, "finetuned_right": 10}
    # only a run of the model the levers were measured on is placed on their chart
    assert tradeoff_point(levers["model"], persona, kept) == {"persona": "10/12", "retention": "10/24"}
    assert tradeoff_point("another-model", persona, kept) is None
    assert tradeoff_point(levers["model"], {"skipped": "no persona"}, kept) is None
    plain = next(r for r in levers["rows"] if not r["overrides"])
    chosen = next(r for r in levers["rows"] if r["chosen"])
    assert f"the demo job: {plain['retention']} without it, {chosen['retention']} with it" in advice(kept, 0)
    edited = copy.deepcopy(levers)
    next(r for r in edited["rows"] if not r["overrides"])["retention"] = "3/24"
    assert "3/24 without it" in advice(kept, 0, edited)
