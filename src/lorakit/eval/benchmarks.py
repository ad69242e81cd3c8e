"""`lorakit eval RUN --tasks ...`: lm-eval benchmarks on the base model and on base + adapter, side by side.

Read top to bottom: check every task (name, cached data, few-shot count) before the model loads;
load the base once with the adapter on it; run lm-eval with the same settings twice, adapter off
then on; keep each task's headline metric with its standard error and every item's scores; add it
all as the `benchmarks` section of eval.json (other sections of an earlier eval are kept) and of
report.html, and return it (the CLI prints the table: lorakit.cli.eval).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

from lorakit.errors import LorakitError

ADAPTER = "finetuned"
# The first of these a task reports is its headline number (multiple choice reports acc and acc_norm).
METRICS = ("acc", "acc_norm", "exact_match", "f1", "mcc", "word_perplexity")
LOWER_IS_BETTER = {"word_perplexity", "byte_perplexity", "bits_per_byte"}
# Bootstrap resamples for the metrics whose standard error has no closed form (acc's does).
BOOTSTRAP_ITERS = 1000


def run_benchmarks(
    run_dir,
    tasks: str | list[str],
    limit: float | None = None,
    num_fewshot: int | None = None,
    include_path: str | Path | None = None,
) -> dict:
    """Run lm-eval `tasks` on RUN_DIR's base model and fine-tuned model; update eval.json and report.html.

    `limit` caps the items per task (a fraction below 1); `num_fewshot` overrides the tasks' shots;
    `include_path` is a folder of task YAML files. Returns the benchmarks section.
    """
    from lorakit.rundir import open_run

    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    if not names:
        raise LorakitError("--tasks: give at least one task name, e.g. --tasks mmlu,cmmlu")
    if limit is not None and limit <= 0:
        raise LorakitError(f"--limit must be > 0, got {limit:g}")
    if limit is not None and limit >= 1:
        limit = int(limit)  # lm-eval reads a float as a fraction of the items
    info = open_run(run_dir)
    out_dir = info.run_dir or info.adapter_dir
    cfg = info.config
    thinking = cfg.data.thinking if cfg else "off"
    system = cfg.data.system if cfg else None

    from lorakit.eval.harness import check_fewshot, load_tasks

    started = time.perf_counter()
    manager, built = load_tasks(names, include_path)
    check_fewshot(built, num_fewshot)
    timing = {"tasks_s": time.perf_counter() - started}

    engine = _load_engine(info, cfg)
    timing["load_s"] = time.perf_counter() - started - sum(timing.values())
    from lorakit.inference.reasoning import thinking_flag

    enable_thinking = thinking_flag(thinking)
    chat = bool(getattr(engine.tokenizer, "chat_template", None))
    raw = {}
    for side, adapter in (("base", None), ("finetuned", ADAPTER)):
        raw[side] = _evaluate(engine, adapter, side, enable_thinking, built, manager, limit, num_fewshot, chat, system)
        timing[f"{side}_s"] = time.perf_counter() - started - sum(timing.values())
    timing["total_s"] = time.perf_counter() - started

    section = {
        "tasks": names,
        "settings": {
            "limit": limit,
            "num_fewshot": num_fewshot,
            "include_path": str(include_path or "") or None,
            "chat_template": "the model's chat template" if chat else "none (plain text prompts)",
            "thinking": thinking,
            "system": system,
            "fewshot_as_multiturn": chat,
            "lm_eval": _lm_eval_version(),
        },
        "results": _side_by_side(raw),
        "items": _items(raw),
        "timing": {k: round(v, 2) for k, v in timing.items()},
    }
    result = _merge(out_dir, info, section)
    _write(out_dir, result)
    return section


def _load_engine(info, cfg):
    import torch

    from lorakit.inference.engine import Engine
    from lorakit.models import precision

    dtype, note = "auto", None
    if cfg is not None:
        dtype, note = precision.weight_dtype(
            cfg.model.dtype, "cuda" if torch.cuda.is_available() else "cpu", cfg.train.precision
        )
    if note:
        print(note)
    return Engine.load(info.base_model, {ADAPTER: str(info.adapter_dir)}, dtype=dtype)


def _evaluate(engine, adapter, side, enable_thinking, built, manager, limit, num_fewshot, chat, system) -> dict:
    """One lm-eval run; every setting is the same for both sides, so the prompts are too."""
    from lm_eval import simple_evaluate

    from lorakit.eval.harness import LorakitLM, quiet_lm_eval

    lm = LorakitLM(engine, adapter, enable_thinking, label=side)
    out = simple_evaluate(
        model=lm,
        tasks=list(built),
        num_fewshot=num_fewshot,
        limit=limit,
        bootstrap_iters=BOOTSTRAP_ITERS,
        log_samples=True,
        apply_chat_template=chat,
        fewshot_as_multiturn=chat,
        system_instruction=system,
        task_manager=manager,
    )
    quiet_lm_eval()  # simple_evaluate resets lm-eval's log level
    return out


def _headline(metrics: dict) -> tuple[str, str] | None:
    """(metric, filter) of the number that stands for a task: acc, else acc_norm, else ..."""
    keys = [k for k in metrics if "," in k and "_stderr" not in k and isinstance(metrics[k], (int, float))]
    for want in METRICS:
        for key in keys:
            if key.split(",")[0] == want:
                return tuple(key.split(",", 1))
    return tuple(keys[0].split(",", 1)) if keys else None


def _side_by_side(raw: dict) -> list[dict]:
    """Per task and group (in lm-eval's order): the headline metric of both sides, stderr and change."""
    rows = []
    tuned_all = raw["finetuned"]["results"]
    n_samples = raw["base"].get("n-samples", {})
    groups = set(raw["base"].get("groups", {}))
    for name, metrics in raw["base"]["results"].items():
        head = _headline(metrics)
        if head is None:
            continue
        metric, filt = head
        key, err = f"{metric},{filt}", f"{metric}_stderr,{filt}"
        tuned = tuned_all.get(name, {})
        b, t = metrics.get(key), tuned.get(key)
        rows.append(
            {
                "task": name,
                "group": name in groups,
                "metric": metric,
                "filter": filt,
                "n": (n_samples.get(name) or {}).get("effective"),
                "base": {"value": b, "stderr": _num(metrics.get(err))},
                "finetuned": {"value": t, "stderr": _num(tuned.get(err))},
                "change": None if b is None or t is None else t - b,
                "lower_is_better": metric in LOWER_IS_BETTER,
            }
        )
    return rows


def _num(x):
    return x if isinstance(x, (int, float)) else None


def _items(raw: dict) -> dict:
    """Every item's scores, both sides: for multiple choice, each choice's loglikelihood."""
    out = {}
    for task, base_samples in (raw["base"].get("samples") or {}).items():
        tuned = {s["doc_id"]: s for s in raw["finetuned"]["samples"].get(task, [])}
        rows = []
        for s in base_samples:
            t = tuned.get(s["doc_id"], {})
            rows.append(
                {
                    "doc_id": s["doc_id"],
                    "target": _plain(s.get("target")),
                    "base": _scores(s),
                    "finetuned": _scores(t) if t else None,
                    "base_metrics": {m: _plain(s.get(m)) for m in s.get("metrics", [])},
                    "finetuned_metrics": {m: _plain(t.get(m)) for m in t.get("metrics", [])},
                }
            )
        out[task] = rows
    return out


def _scores(sample: dict) -> list:
    """Loglikelihoods (multiple choice), or the generated answers."""
    got = []
    for resp in sample.get("resps", []):
        first = resp[0] if isinstance(resp, (list, tuple)) and resp else resp
        got.append(first[0] if isinstance(first, (list, tuple)) else first)
    return [_plain(g) for g in got]


def _plain(x):
    try:
        json.dumps(x)
        return x
    except TypeError:
        return str(x)


def _lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


def _earlier(out_dir: Path) -> dict:
    """The eval.json already in `out_dir` ({} when there is none or it does not parse)."""
    path = Path(out_dir) / "eval.json"
    try:
        previous = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return previous if isinstance(previous, dict) else {}


def earlier_benchmarks(out_dir: Path) -> dict:
    """{"benchmarks": section} from the eval.json in `out_dir`, or {}: a plain eval keeps it."""
    section = _earlier(out_dir).get("benchmarks")
    return {"benchmarks": section} if isinstance(section, dict) else {}


def _merge(out_dir: Path, info, section: dict) -> dict:
    """An earlier eval.json with this benchmarks section in it, or a new one holding only this section."""
    previous = _earlier(out_dir)
    base = (
        previous
        if previous.get("run_dir")
        else {"run_dir": str(out_dir), "base_model": info.base_model, "adapter": str(info.adapter_dir)}
    )
    base["benchmarks"] = dict(section, created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    return base


def _write(out_dir: Path, result: dict) -> None:
    from lorakit.atomic import write_json, write_text
    from lorakit.eval.report import render_report
    from lorakit.training.tracking import read_completions, read_metrics

    write_json(out_dir / "eval.json", result)
    page = render_report(result, read_metrics(out_dir / "metrics.jsonl"), read_completions(out_dir))
    write_text(out_dir / "report.html", page)
