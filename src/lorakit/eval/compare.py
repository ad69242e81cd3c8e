"""The eval stage: what did the fine-tune change, in numbers and side by side.

`evaluate` composes phases that each return data: read and check the inputs (before torch); load the
base model once with the adapter on it (the base answers come from the same weights with the adapter
switched off); held-out loss of both (for a GRPO run: the held-out prompts scored by its reward
functions, greedy and pass@k, instead); answers of both to the same prompts, greedy and sampled;
persona and retention scores; an optional judge. It writes eval.json and report.html into the run
and returns what eval.json holds; the terminal summary is the CLI's (lorakit.cli.eval).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from lorakit.eval import preference, rewards, scores, tool_calls, tradeoff
from lorakit.eval.answers import SAMPLED, answer_all, retention_budget, side_by_side
from lorakit.eval.heldout import heldout_data, heldout_loss
from lorakit.eval.inputs import EvalInputs, read_inputs
from lorakit.eval.prompts import Prompt, prompts_from_conversations, user_prompt

ADAPTER = "finetuned"
# Prompts answered side by side (4 answers each). With the retention budget, this sets most of the
# eval's run time.
PROMPT_CAP = 8


def evaluate(
    run_dir,
    data: str | None = None,
    prompts=None,
    max_new_tokens: int = 96,
    judge_url: str | None = None,
    judge_model: str | None = None,
    seed: int = 0,
    persona_keywords: list[str] | str | None = None,
    retention: str | None = None,
    max_prompts: int = PROMPT_CAP,
    lang: str | None = None,
) -> dict:
    """Compare the base model and the fine-tuned one of RUN_DIR; write eval.json and report.html there.

    `data` replaces the run's eval split as held-out data; `prompts` is a prompts file (see
    `lorakit.eval.prompts.load_prompts`); `persona_keywords` replaces persona_facts.json;
    `retention` replaces the bundled retention questions; at most `max_prompts` prompts are
    answered side by side. `lang` ("en" or "zh") picks the bundled retention and identity
    questions; by default data.language, else the language of the data. Returns what eval.json holds.
    """
    clock = _Clock()
    run = read_inputs(run_dir, data, prompts, persona_keywords, retention, lang, judge_url)
    engine = load_engine(run)
    clock.lap("load_s")
    grpo = rewards.is_grpo_run(run.cfg) and not run.bare
    if grpo:  # prompts and reward functions, no reference answers: rewards instead of a loss
        prompts_held = rewards.heldout_prompts(run.cfg, engine.tokenizer, data, run.bare)
        held, pairs = rewards.as_heldout(prompts_held), {"units": [], "source": "none", "skipped": "a GRPO run"}
    else:
        held, pairs = preference.heldout(
            run.cfg, engine.tokenizer, data, run.bare, lambda: heldout_data(run.cfg, engine.tokenizer, data, run.bare)
        )
    loss = heldout_loss(engine, held, run.cfg, ADAPTER)
    pref = preference.preference_scores(engine, pairs, run.cfg, ADAPTER)  # held-out pairs: base vs tuned
    clock.lap("loss_s")
    calls = tool_calls.tool_call_scores(
        engine, held["conversations"], held["source"], run.cfg.data.thinking, ADAPTER, max_new_tokens
    )
    if calls and not calls.get("skipped"):
        clock.lap("tool_calls_s")
    scored = rewards.reward_scores(engine, prompts_held, run.cfg, ADAPTER, seed) if grpo else None
    if grpo:
        clock.lap("rewards_s")
    asked, prompts_source, notes = choose_prompts(run, prompts, held, max_prompts)
    identity = (
        [user_prompt(q, run.cfg.data.system) for q in scores.identity_questions(run.language)]
        if run.persona_setup
        else []
    )
    general = [user_prompt(i["question"], run.cfg.data.system) for i in run.retention_items]
    got, tokens = answer_all(engine, run.cfg.data.thinking, asked, identity, general, max_new_tokens, seed, ADAPTER)
    answers = side_by_side(asked, got)
    clock.lap("answers_s")
    persona = score_persona(run.persona_setup, identity, got, answers)
    kept = score_retention(run, got)
    judged = judge(judge_url, judge_model, answers)
    if judged is not None:
        clock.lap("judge_s")
    timing = dict(clock.laps, total_s=clock.total(), generated_tokens=tokens)

    result = {
        "run_dir": str(run.out_dir),
        "base_model": run.info.base_model,
        "adapter": str(run.info.adapter_dir),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "settings": {
            "max_new_tokens": max_new_tokens,
            "seed": seed,
            "prompts_source": prompts_source,
            "greedy": {"temperature": 0},
            "sampled": dict(SAMPLED, seed=seed),
            "retention_max_new_tokens": retention_budget(max_new_tokens),
            "thinking": run.cfg.data.thinking,
            "language": run.language,
            "language_source": run.language_source,
            "retention_set": run.retention_set,
        },
        "loss": loss,
        "preference": pref,
        "tool_calls": calls,
        "rewards": scored,
        "answers": answers,
        "persona": persona,
        "retention": kept,
        "judge": judged,
        "notes": notes,
        "timing": {k: round(v, 2) for k, v in timing.items()},
    }
    point = None if run.bare else tradeoff.tradeoff_point(run.cfg.model.name, persona, kept)
    if point:  # a run of the model the levers were measured on goes on their chart
        result["tradeoff_point"] = point
    write_result(run.out_dir, result)
    return result


class _Clock:
    """Seconds per phase since the eval started."""

    def __init__(self):
        self.started, self.laps = time.perf_counter(), {}

    def lap(self, name: str) -> None:
        self.laps[name] = self.total() - sum(self.laps.values())

    def total(self) -> float:
        return time.perf_counter() - self.started


def load_engine(run: EvalInputs):
    """The base model in the run's weight dtype, with the adapter loaded as ADAPTER."""
    import torch  # torch and transformers: after every user file has been read and checked

    from lorakit.inference.engine import Engine
    from lorakit.models import precision

    dtype, dtype_note = precision.weight_dtype(
        run.cfg.model.dtype, "cuda" if torch.cuda.is_available() else "cpu", run.cfg.train.precision
    )
    if dtype_note:
        print(dtype_note)
    return Engine.load(run.info.base_model, {ADAPTER: str(run.info.adapter_dir)}, dtype=dtype)


def choose_prompts(run: EvalInputs, prompts, held: dict, cap: int) -> tuple[list[Prompt], str, list[str]]:
    """The side-by-side prompts: the --prompts file, else held-out questions, else training questions."""
    notes = []
    asked, source = run.asked, str(prompts)
    if asked is None:
        asked, source = prompts_from_conversations(held["conversations"], cap), held["source"]
    if (
        not asked
        and not run.bare
        and run.cfg.data.path
        and not preference.is_preference_run(run.cfg)
        and not rewards.is_grpo_run(run.cfg)
    ):
        from lorakit.data import load_conversations

        cfg = run.cfg.data
        convs = load_conversations(cfg.path, cfg.format, cfg.columns or None, cfg.system)
        asked, source = prompts_from_conversations(convs, cap), f"training data {cfg.path}"
        notes.append("No held-out data: the side-by-side prompts come from the training data (seen in training).")
    if len(asked) > cap:
        notes.append(f"Side by side: the first {cap} of {len(asked)} prompts in {prompts}.")
        asked = asked[:cap]
    return asked, source, notes


def score_persona(setup, identity: list[Prompt], got: dict, answers: list[dict]) -> dict:
    """The persona score on the identity questions, and the side-by-side greedy answers as a second check."""
    if not setup:
        return {
            "skipped": "no persona_facts.json beside the data, no --persona-keywords or "
            "data.persona_keywords, and no word recurs often enough in the training answers: "
            "not persona data"
        }
    rule = setup
    if isinstance(setup, list):  # candidate words: keep those no base answer uses
        rule = scores.derive_rule(
            setup, got["base"]["identity"] + [a["base"][m] for a in answers for m in ("greedy", "sampled")]
        )
        if rule is None:
            return {
                "skipped": "every word frequent in the training answers also appears in base answers: "
                "no persona to look for"
            }
    result = scores.score_persona(
        rule, [p.text for p in identity], got["base"]["identity"], got["finetuned"]["identity"]
    )
    # Identity questions may also occur in the training data; held-out prompts are a second, unseen check.
    result["side_by_side"] = {
        "n": len(answers),
        "base_hits": sum(bool(rule.matches(a["base"]["greedy"])) for a in answers),
        "finetuned_hits": sum(bool(rule.matches(a["finetuned"]["greedy"])) for a in answers),
    }
    return result


def score_retention(run: EvalInputs, got: dict) -> dict:
    """General questions right, base against fine-tuned, with advice when the fine-tune forgot."""
    kept = scores.score_retention(run.retention_items, got["base"]["general"], got["finetuned"]["general"])
    if not run.bare and rewards.is_grpo_run(run.cfg):
        # The replay lever is SFT's (GRPO trains on its own samples, not on data): no advice to give.
        return kept
    kept_advice = tradeoff.advice(kept, 0 if run.bare else run.cfg.data.replay)
    if kept_advice:
        kept["advice"] = kept_advice
    return kept


def judge(judge_url: str | None, judge_model: str | None, answers: list[dict]) -> dict | None:
    """The judge model's grades of both greedy answers per prompt, or None without a judge."""
    if not judge_url:
        return None
    from lorakit.eval.judge import run_judge

    return run_judge(
        judge_url,
        judge_model,
        [
            {
                "prompt": a["prompt"],
                "reference": a["reference"],
                "base": a["base"]["greedy"],
                "finetuned": a["finetuned"]["greedy"],
            }
            for a in answers
        ],
    )


def write_result(out_dir, result: dict) -> None:
    """eval.json (an earlier `--tasks` section kept) and report.html in `out_dir`."""
    from lorakit.atomic import write_json, write_text
    from lorakit.eval.benchmarks import earlier_benchmarks
    from lorakit.eval.report import render_report
    from lorakit.training.tracking import read_completions, read_metrics

    result.update(earlier_benchmarks(out_dir))  # an earlier `--tasks` section stays in eval.json
    write_json(out_dir / "eval.json", result)
    page = render_report(result, read_metrics(out_dir / "metrics.jsonl"), read_completions(out_dir))
    write_text(out_dir / "report.html", page)
