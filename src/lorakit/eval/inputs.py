"""The eval's first phase: open the run and read and check every user file, before torch is imported.

A typo in a prompts, retention or keywords argument fails here in one line, not after the model has
loaded. What it returns (`EvalInputs`) is everything the later phases need besides the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lorakit.errors import LorakitError
from lorakit.eval import scores
from lorakit.eval.prompts import Prompt, load_prompts


@dataclass
class EvalInputs:
    """The run, its settings, and the questions and rules the eval will use."""

    info: object  # lorakit.rundir.RunInfo
    out_dir: Path  # where eval.json and report.html go
    bare: bool  # an adapter folder without config.yaml
    cfg: object  # the run's RunConfig (the defaults with its base model when bare)
    asked: list[Prompt] | None  # the --prompts file's prompts, None without one
    language: str
    language_source: str
    retention_items: list[dict]
    retention_set: str  # where the retention questions came from
    persona_setup: object  # a rule, candidate words, or None (see `persona_setup`)


def read_inputs(
    run_dir, data: str | None, prompts, persona_keywords, retention: str | None, lang: str | None, judge_url: str | None
) -> EvalInputs:
    """Open RUN_DIR and read every file and setting the eval needs; one-line errors for bad ones."""
    from lorakit.rundir import open_run

    info = open_run(run_dir)
    bare = info.config is None
    cfg = info.config or _bare_config(info.base_model)
    asked = load_prompts(prompts, cfg.data.system) if prompts else None
    language, language_source = _language(lang, cfg, data, asked, bare)
    retention_items = scores.load_retention(retention, language)
    setup = persona_setup(cfg, data, prompts, persona_keywords, bare, language)
    if judge_url:
        from lorakit.eval.judge import api_base

        api_base(judge_url)
    return EvalInputs(
        info,
        info.run_dir or info.adapter_dir,
        bare,
        cfg,
        asked,
        language,
        language_source,
        retention_items,
        str(retention or scores.retention_file(language)),
        setup,
    )


def _bare_config(base_model: str):
    """Settings for a bare adapter folder (no config.yaml): the defaults, with its base model."""
    from lorakit.config import RunConfig

    return RunConfig.model_validate({"model": {"name": base_model}})


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

    training = (None if bare else cfg.data.path, cfg.data.format, "the training data")
    for path, fmt, where in ((data, "auto", "--data"), training):
        if not path:
            continue
        try:
            convs = load_conversations(path, fmt, cfg.data.columns or None)
        except LorakitError:
            continue
        return [m.content for c in convs[:500] for m in c.messages], where
    return [], ""


def persona_setup(cfg, data, prompts, persona_keywords, bare: bool, language: str = "en"):
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
