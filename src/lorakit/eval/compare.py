"""The eval stage: what did the fine-tune change, in numbers and side by side.

Read top to bottom: open the run and load the base model once with the adapter on it (the base
answers come from the same weights with the adapter switched off); held-out loss of both; answers
of both to the same prompts, greedy and sampled; persona and retention scores; an optional judge;
then eval.json, report.html and a summary table, all in the run directory.
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime, timezone
from pathlib import Path

from lorakit.errors import LorakitError
from lorakit.eval import preference, scores, tradeoff
from lorakit.eval.prompts import Prompt, load_prompts, prompts_from_conversations, user_prompt

ADAPTER = "finetuned"
# Prompts answered side by side (4 answers each). Generation is one sequence at a time, so this and
# the retention budget set most of the eval's run time.
PROMPT_CAP = 8
# Retention answers are graded on keywords that come in the first sentence; a short budget keeps
# 2 x 24 answers cheap.
RETENTION_MAX_TOKENS = 24
SAMPLED = {"temperature": 0.7, "top_p": 0.9}


def evaluate(run_dir, data: str | None = None, prompts=None, max_new_tokens: int = 96,
             judge_url: str | None = None, judge_model: str | None = None, seed: int = 0,
             persona_keywords: list[str] | str | None = None, retention: str | None = None,
             max_prompts: int = PROMPT_CAP, lang: str | None = None) -> dict:
    """Compare the base model and the fine-tuned one of RUN_DIR; write eval.json and report.html there.

    `data` replaces the run's eval split as held-out data; `prompts` is a prompts file (see
    `lorakit.eval.prompts.load_prompts`); `persona_keywords` replaces persona_facts.json;
    `retention` replaces the bundled retention questions; at most `max_prompts` prompts are
    answered side by side. `lang` ("en" or "zh") picks the bundled retention and identity
    questions; by default data.language, else the language of the data. Returns what eval.json holds.
    """
    from lorakit.atomic import write_json, write_text
    from lorakit.eval.report import render_report
    from lorakit.rundir import open_run
    from lorakit.training.tracking import read_metrics

    started = time.perf_counter()
    timing: dict[str, float] = {}
    info = open_run(run_dir)
    out_dir = info.run_dir or info.adapter_dir
    bare = info.config is None
    cfg = info.config or _bare_config(info.base_model)
    # Everything read from user files is checked before the model loads, so a typo fails at once.
    asked = load_prompts(prompts, cfg.data.system) if prompts else None
    language, language_source = _language(lang, cfg, data, asked, bare)
    retention_items = scores.load_retention(retention, language)
    persona_setup = _persona_setup(cfg, data, prompts, persona_keywords, bare, language)
    if judge_url:
        from lorakit.eval.judge import api_base

        api_base(judge_url)
    import torch  # torch and transformers: after every user file has been read and checked

    from lorakit.inference.engine import Engine
    from lorakit.models import precision

    dtype, dtype_note = precision.weight_dtype(cfg.model.dtype, "cuda" if torch.cuda.is_available() else "cpu",
                                               cfg.train.precision)
    if dtype_note:
        print(dtype_note)
    engine = Engine.load(info.base_model, {ADAPTER: str(info.adapter_dir)}, dtype=dtype)
    timing["load_s"] = time.perf_counter() - started

    held, pairs = preference.heldout(cfg, engine.tokenizer, data, bare,
                                     lambda: _heldout(cfg, engine.tokenizer, data, bare))
    loss = _losses(engine, held, cfg)
    pref = preference.preference_scores(engine, pairs, cfg, ADAPTER)  # held-out pairs: base vs tuned
    timing["loss_s"] = time.perf_counter() - started - sum(timing.values())

    asked, prompts_source, notes = _choose_prompts(asked, prompts, held, cfg, bare, max_prompts)
    identity = [user_prompt(q, cfg.data.system) for q in scores.identity_questions(language)] if persona_setup else []
    general = [user_prompt(i["question"], cfg.data.system) for i in retention_items]
    budget = min(max_new_tokens, RETENTION_MAX_TOKENS)
    gen = _Answerer(engine, cfg.data.thinking, max_new_tokens, seed)
    gen.start_progress(2 * (2 * len(asked) + len(identity) + len(general)))
    # All base answers first, then all fine-tuned ones: each phase is one adapter setting, and the
    # shape a batched engine call would take.
    got = {side: {"greedy": gen.ask_many(asked, adapter), "sampled": gen.ask_many(asked, adapter, sampled=True),
                  "identity": gen.ask_many(identity, adapter), "general": gen.ask_many(general, adapter, budget)}
           for side, adapter in (("base", None), ("finetuned", ADAPTER))}
    gen.close()
    answers = [{"prompt": p.text, "reference": p.reference,
                "base": {m: got["base"][m][i] for m in ("greedy", "sampled")},
                "finetuned": {m: got["finetuned"][m][i] for m in ("greedy", "sampled")}}
               for i, p in enumerate(asked)]
    timing["answers_s"] = time.perf_counter() - started - sum(timing.values())

    persona = _persona(persona_setup, identity, got, answers)
    kept = scores.score_retention(retention_items, got["base"]["general"], got["finetuned"]["general"])
    kept_advice = tradeoff.advice(kept, 0 if bare else cfg.data.replay)
    if kept_advice:
        kept["advice"] = kept_advice

    judged = None
    if judge_url:
        from lorakit.eval.judge import run_judge

        judged = run_judge(judge_url, judge_model, [
            {"prompt": a["prompt"], "reference": a["reference"], "base": a["base"]["greedy"],
             "finetuned": a["finetuned"]["greedy"]} for a in answers])
        timing["judge_s"] = time.perf_counter() - started - sum(timing.values())
    timing["total_s"] = time.perf_counter() - started
    timing["generated_tokens"] = gen.tokens

    result = {
        "run_dir": str(out_dir),
        "base_model": info.base_model,
        "adapter": str(info.adapter_dir),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "settings": {"max_new_tokens": max_new_tokens, "seed": seed, "prompts_source": prompts_source,
                     "greedy": {"temperature": 0}, "sampled": dict(SAMPLED, seed=seed),
                     "retention_max_new_tokens": budget, "thinking": cfg.data.thinking,
                     "language": language, "language_source": language_source,
                     "retention_set": str(retention or scores.retention_file(language))},
        "loss": loss,
        "preference": pref,
        "answers": answers,
        "persona": persona,
        "retention": kept,
        "judge": judged,
        "notes": notes,
        "timing": {k: round(v, 2) for k, v in timing.items()},
    }
    side = (persona or {}).get("side_by_side") or {}
    if not bare and cfg.model.name == tradeoff.DEMO_MODEL and side.get("n") and "n" in kept:
        # a demo-model run is placed on the demo job's measured trade-off chart
        result["tradeoff_point"] = {"persona": f"{side['finetuned_hits']}/{side['n']}",
                                    "retention": f"{kept['finetuned_right']}/{kept['n']}"}
    from lorakit.eval.benchmarks import earlier_benchmarks

    result.update(earlier_benchmarks(out_dir))  # an earlier `--tasks` section stays in eval.json
    write_json(out_dir / "eval.json", result)
    report = out_dir / "report.html"
    write_text(report, render_report(result, read_metrics(out_dir / "metrics.jsonl")))
    _print_summary(result, report)
    return result


def _choose_prompts(asked, prompts, held: dict, cfg, bare: bool, cap: int) -> tuple[list[Prompt], str, list[str]]:
    """The side-by-side prompts: the --prompts file, else held-out questions, else training questions."""
    notes = []
    source = str(prompts)
    if asked is None:
        asked, source = prompts_from_conversations(held["conversations"], cap), held["source"]
    if not asked and not bare and cfg.data.path and not preference.is_preference_run(cfg):
        from lorakit.data import load_conversations

        convs = load_conversations(cfg.data.path, cfg.data.format, cfg.data.columns or None, cfg.data.system)
        asked, source = prompts_from_conversations(convs, cap), f"training data {cfg.data.path}"
        notes.append("No held-out data: the side-by-side prompts come from the training data (seen in training).")
    if len(asked) > cap:
        notes.append(f"Side by side: the first {cap} of {len(asked)} prompts in {prompts}.")
        asked = asked[:cap]
    return asked, source, notes


def _bare_config(base_model: str):
    """Settings for a bare adapter folder (no config.yaml): the defaults, with its base model."""
    from lorakit.config import RunConfig

    return RunConfig.model_validate({"model": {"name": base_model}})


def _heldout(cfg, tokenizer, data: str | None, bare: bool) -> dict:
    """Held-out samples (tokenized as in training) and their conversations (for prompts)."""
    from lorakit.data import prepare_splits
    from lorakit.data.prepared import split_conversations
    from lorakit.models import cache_root

    cache = cache_root(cfg.model.cache_dir) / "prepared"
    if data:
        # The file becomes the "training" split of a copy of the run's data settings: same
        # template, thinking, masking and max_length as training, no split, no mixing, no cap.
        dcfg = cfg.data.model_copy(update={"path": data, "eval_split": 0.0, "eval_path": None, "weights": [],
                                           "max_samples": None})
        convs, _, _ = split_conversations(dcfg)
        return {"samples": prepare_splits(dcfg, tokenizer, cache).train, "conversations": convs, "source": str(data)}
    if bare:
        return {"samples": [], "conversations": [], "source": "none",
                "skipped": "an adapter folder without config.yaml has no eval split; pass --data FILE"}
    if not cfg.data.eval_path and not cfg.data.eval_split:
        return {"samples": [], "conversations": [], "source": "none",
                "skipped": "the run has no held-out data (data.eval_split = 0 and no data.eval_path); pass --data FILE"}
    where = cfg.data.eval_path or f"eval split ({cfg.data.eval_split:g}) of {cfg.data.path}"
    _, convs, _ = split_conversations(cfg.data)  # the same seeded split prepare_splits makes
    return {"samples": prepare_splits(cfg.data, tokenizer, cache).eval, "conversations": convs, "source": str(where)}


def _losses(engine, held: dict, cfg) -> dict:
    """Token-mean loss on the held-out answers, base (adapter off) and fine-tuned, as in training."""
    from lorakit.data.template import IGNORE
    from lorakit.training.batching import pad_token_id
    from lorakit.training.loss import evaluate_loss, perplexity

    samples = held["samples"]
    if not samples:
        return {"data": held["source"], "skipped": held.get("skipped", "no held-out samples")}
    pad_id = pad_token_id(engine.tokenizer)
    # Weights are loaded in their target dtype (bf16 on GPU), so no autocast is needed here.
    args = (samples, cfg.train.batch_size, cfg.train.packing, pad_id, engine.device, contextlib.nullcontext())
    with engine.model.disable_adapter():
        base = evaluate_loss(engine.model, *args)
    engine.model.set_adapter(ADAPTER)
    tuned = evaluate_loss(engine.model, *args)
    # Labels are shifted for the loss, so a sample's first label never counts (as in batching.pack).
    n_sup = sum(sum(1 for label in s["labels"][1:] if label != IGNORE) for s in samples)
    return {"data": held["source"], "samples": len(samples), "supervised_tokens": n_sup,
            "base": {"loss": base, "ppl": perplexity(base)},
            "finetuned": {"loss": tuned, "ppl": perplexity(tuned)}}


def _language(lang, cfg, data, asked, bare: bool) -> tuple[str, str]:
    """The language of the bundled sets to use, and why: --lang, data.language, else detected."""
    from lorakit.data.language import LANGUAGES, detect_language

    if lang:
        if lang not in LANGUAGES:
            raise LorakitError(f"--lang: expected one of {', '.join(LANGUAGES)} (got {lang!r})")
        return lang, "--lang"
    if cfg.data.language != "auto":
        return cfg.data.language, "data.language in the run's config"
    texts, where = _data_texts(data, cfg, bare)
    if not texts and asked:
        texts, where = [p.text for p in asked], "the prompts"
    if not texts:
        return "en", "default (no data to detect it from)"
    return detect_language(texts), f"detected from {where}"


def _data_texts(data, cfg, bare: bool) -> tuple[list[str], str]:
    """Message texts of the --data file, else of the run's training data; empty if neither loads."""
    from lorakit.data import load_conversations

    for path, fmt, where in ((data, "auto", "--data"), (None if bare else cfg.data.path, cfg.data.format, "the training data")):
        if not path:
            continue
        try:
            convs = load_conversations(path, fmt, cfg.data.columns or None)
        except LorakitError:
            continue
        return [m.content for c in convs[:500] for m in c.messages], where
    return [], ""


def _persona_setup(cfg, data, prompts, persona_keywords, bare: bool, language: str = "en"):
    """How the persona will be scored: a rule now (--persona-keywords, data.persona_keywords, facts
    file), candidate words to narrow once base answers exist (derived), or None (no persona-like data)."""
    if persona_keywords:
        return scores.keywords_rule(persona_keywords)
    if cfg.data.persona_keywords:
        return scores.keywords_rule(cfg.data.persona_keywords, "data.persona_keywords in the run's config")
    from lorakit.data.readers import resolve_paths

    files = [Path(p) for p in (data, prompts) if p] + ([] if bare else _safe_paths(resolve_paths, cfg.data.path))
    facts = scores.find_facts_file([f if f.is_dir() else f.parent for f in files])
    if facts:
        return scores.load_facts(facts)
    if bare or not cfg.data.path:
        return None
    from lorakit.data import load_conversations

    try:
        convs = load_conversations(cfg.data.path, cfg.data.format, cfg.data.columns or None, cfg.data.system)
    except LorakitError:
        return None  # training data moved since training: --data still works, only without a persona score
    outputs = [m.content for c in convs for m in c.messages if m.role == "assistant"]
    return scores.candidate_keywords(outputs, language) or None


def _safe_paths(resolve, path) -> list[Path]:
    try:
        return resolve(path) if path else []
    except LorakitError:
        return []


def _persona(setup, identity: list[Prompt], got: dict, answers: list[dict]) -> dict:
    if not setup:
        return {"skipped": "no persona_facts.json beside the data, no --persona-keywords or "
                           "data.persona_keywords, and no word recurs often enough in the training answers: "
                           "not persona data"}
    rule = setup
    if isinstance(setup, list):  # candidate words: keep those no base answer uses
        rule = scores.derive_rule(setup, got["base"]["identity"] + [a["base"][m] for a in answers
                                                                     for m in ("greedy", "sampled")])
        if rule is None:
            return {"skipped": "every word frequent in the training answers also appears in base answers: "
                               "no persona to look for"}
    result = scores.score_persona(rule, [p.text for p in identity], got["base"]["identity"],
                                  got["finetuned"]["identity"])
    # Identity questions may also occur in the training data; held-out prompts are a second, unseen check.
    result["side_by_side"] = {"n": len(answers),
                              "base_hits": sum(bool(rule.matches(a["base"]["greedy"])) for a in answers),
                              "finetuned_hits": sum(bool(rule.matches(a["finetuned"]["greedy"])) for a in answers)}
    return result


class _Answerer:
    """Asks the engine, base (adapter None) or fine-tuned; identical requests are answered once."""

    def __init__(self, engine, thinking: str, max_new_tokens: int, seed: int):
        from lorakit.inference.engine import SamplingParams

        self.engine = engine
        # Ask the way the model was trained: thinking off renders the template's empty think block.
        self.enable_thinking = {"off": False, "on": True}.get(thinking)
        self.greedy = SamplingParams(temperature=0, max_new_tokens=max_new_tokens)
        self.sampled = SamplingParams(max_new_tokens=max_new_tokens, seed=seed, **SAMPLED)
        self.memo: dict[tuple, str] = {}
        self.bar = None
        self.tokens = 0  # completion tokens generated, for the tokens/s line in the timing

    def start_progress(self, total: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="eval answers", unit="answer", dynamic_ncols=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def ask_many(self, prompts: list[Prompt], adapter: str | None, max_new_tokens: int | None = None,
                 sampled: bool = False) -> list[str]:
        """Answer texts (reasoning split off) of one model to several prompts, with one setting.

        Prompts not answered before go to the engine in one batched call; identical requests are
        generated once.
        """
        from dataclasses import replace

        params = self.sampled if sampled else self.greedy
        if max_new_tokens:
            params = replace(params, max_new_tokens=max_new_tokens)
        keys = [(tuple(self.engine.chat_prompt(p.messages, enable_thinking=self.enable_thinking)), adapter,
                 params.temperature, params.seed, params.max_new_tokens) for p in prompts]
        todo = {key: list(key[0]) for key in keys if key not in self.memo}
        if todo:
            try:
                done = self.engine.generate_batch(list(todo.values()), params, adapter)
            except ValueError:  # some prompt does not fit the context: one at a time, to tell which
                done = [self._one(ids, params, adapter) for ids in todo.values()]
            for (key, ids), chunk in zip(todo.items(), done):
                self.memo[key] = chunk if isinstance(chunk, str) else self._answer(ids, chunk)
        if self.bar is not None:
            self.bar.update(len(prompts))
        return [self.memo[key] for key in keys]

    def _one(self, ids: list[int], params, adapter: str | None):
        """One prompt's Chunk, or the note for its answer cell when it does not fit the context."""
        try:
            return self.engine.generate(ids, params, adapter)
        except ValueError as e:
            return f"[not generated: {e}]"

    def _answer(self, ids: list[int], done) -> str:
        from lorakit.inference.reasoning import split_reasoning

        self.tokens += done.completion_tokens
        return split_reasoning(done.text, self.engine.opens_reasoning(ids))[1].strip()


def _print_summary(result: dict, report: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from lorakit.eval.report import summary_rows

    table = Table(title=f"lorakit eval: {result['run_dir']}", title_justify="left")
    for col, just in (("measure", "left"), ("base", "right"), ("fine-tuned", "right"), ("change", "right")):
        table.add_column(col, justify=just)
    for label, base, tuned, lower in summary_rows(result):
        change = ""
        if base is not None and tuned is not None:
            delta = tuned - base
            colour = "" if delta == 0 else ("green" if (delta < 0) == lower else "red")
            change = f"[{colour}]{delta:+.4g}[/]" if colour else f"{delta:+.4g}"
        table.add_row(label, _fmt(base), _fmt(tuned), change)
    console = Console()  # notes below are soft-wrapped: a narrow terminal must not split them mid-phrase
    console.print(table)
    if "base" in (result.get("preference") or {}):
        for line in preference.summary_lines(result["preference"]):
            console.print(line, markup=False, soft_wrap=True)
    for section in ("loss", "persona"):
        if (result.get(section) or {}).get("skipped"):
            console.print(f"{section}: {result[section]['skipped']}", markup=False, soft_wrap=True)
    if result.get("persona", {}).get("rule"):
        console.print(f"persona rule: {result['persona']['rule']}", markup=False, soft_wrap=True)
    settings = result.get("settings") or {}
    if (result.get("retention") or {}).get("rule"):
        console.print(f"retention rule ({settings.get('retention_set')}, language {settings.get('language')}, "
                      f"{settings.get('language_source')}): {result['retention']['rule']}", markup=False, soft_wrap=True)
    if (result.get("retention") or {}).get("advice"):
        console.print(result["retention"]["advice"], markup=False, style="yellow", soft_wrap=True)
    if result.get("judge") and result["judge"].get("error"):
        console.print(f"judge: {result['judge']['error']}", markup=False, style="red", soft_wrap=True)
    console.print(f"report: {report}", markup=False, soft_wrap=True)


def _fmt(x) -> str:
    if x is None:
        return "–"
    return f"{x:.4g}" if isinstance(x, float) else str(x)
