"""report.html: one self-contained page (inline CSS and SVG, no scripts, no network) from eval.json.

Every piece of model or user text goes through `_esc` (or `_highlight`, which escapes too): answers
are untrusted and may well contain `<script>`.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path
from string import Template

from lorakit.eval.summary import fixed, signed_change, summary_rows, value_text, verdict

TEMPLATE = Path(__file__).resolve().parents[1] / "assets" / "report_template.html"


def _esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _highlight(text: str, terms: list[str], whole_words: bool = False) -> str:
    """Escape `text`, wrapping every case-insensitive occurrence of a term in <mark>."""
    terms = [t for t in terms if t]
    if not terms:
        return _esc(text)
    alternatives = "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True))
    pattern = rf"(?<!\w)(?:{alternatives})(?!\w)" if whole_words else alternatives
    out, last = [], 0
    for m in re.finditer(pattern, text, flags=re.IGNORECASE):
        out += [_esc(text[last : m.start()]), f"<mark>{_esc(m.group(0))}</mark>"]
        last = m.end()
    out.append(_esc(text[last:]))
    return "".join(out)


def _change(base, tuned, lower_is_better: bool) -> str:
    """The signed change, coloured by whether it went the good way."""
    if base is None or tuned is None:
        return "<td class='num'>–</td>"
    return f"<td class='num {verdict(tuned - base, lower_is_better)}'>{signed_change(base, tuned)}</td>"


def loss_chart_svg(
    metrics: list[dict], base_loss: float | None, tuned_loss: float | None, rewarded: bool = False
) -> str:
    """Train and eval loss per step from metrics.jsonl, with the two held-out losses as lines; inline SVG.
    `rewarded` (a GRPO run): its eval_loss is minus the held-out reward and its loss the GRPO objective, not
    nats per token, and the axis says so."""
    import matplotlib.ticker

    from lorakit.figures import Chart, svg_inline

    series = {
        k: [(r["step"], r[k]) for r in metrics if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
        for k in ("loss", "eval_loss")
    }
    if not any(series.values()):
        return ""
    fig = Chart(figsize=(7.5, 3.4), dpi=96)
    ax = fig.add_subplot()
    eval_label = "minus held-out reward (during training)" if rewarded else "eval loss (during training)"
    for key, label in (("loss", "train loss"), ("eval_loss", eval_label)):
        if series[key]:
            ax.plot(*zip(*series[key]), marker="o" if len(series[key]) < 40 else None, markersize=3, label=label)
    for value, label, style in ((base_loss, "base model, held-out", "--"), (tuned_loss, "fine-tuned, held-out", ":")):
        if value is not None and math.isfinite(value):
            ax.axhline(value, linestyle=style, color="#555" if style == "--" else "#137333", linewidth=1.2, label=label)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("GRPO loss / minus reward" if rewarded else "loss (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return svg_inline(fig)


def _header(result: dict) -> str:
    s = result["settings"]
    return (
        f"<h1>What the fine-tune changed</h1>"
        f"<div class='meta'>run <code>{_esc(result['run_dir'])}</code> · base model <code>{_esc(result['base_model'])}</code>"  # noqa: E501
        f" · evaluated {_esc(result['created'])} in {result['timing'].get('total_s', 0):.0f} s<br>"
        f"held-out data: {_esc((result.get('loss') or {}).get('data', '–'))} · prompts: {_esc(s['prompts_source'])}"
        f" · up to {s['max_new_tokens']} new tokens · greedy and sampled "
        f"(temperature {s['sampled']['temperature']}, top_p {s['sampled']['top_p']}, seed {s['seed']})</div>"
    )


def _summary(result: dict) -> str:
    rows = "".join(
        f"<tr><td>{_esc(label)}</td><td class='num'>{fixed(b)}</td><td class='num'>{fixed(t)}</td>"
        f"{_change(b, t, lower)}</tr>"
        for label, b, t, lower in summary_rows(result)
    )
    notes = "".join(f"<p class='note'>{_esc(n)}</p>" for n in result.get("notes", []))
    return (
        "<h2>Summary</h2><table><tr><th>measure</th><th>base</th><th>fine-tuned</th><th>change</th></tr>"
        f"{rows}</table>{notes}"
    )


def _curves(metrics: list[dict], result: dict) -> str:
    loss = result.get("loss") or {}
    svg = loss_chart_svg(
        metrics,
        (loss.get("base") or {}).get("loss"),
        (loss.get("finetuned") or {}).get("loss"),
        rewarded=bool(result.get("rewards")),
    )
    body = f"<div class='chart'>{svg}</div>" if svg else "<p class='note'>no metrics.jsonl in the run directory</p>"
    return "<h2>Training curves</h2>" + body


def _loss(result: dict) -> str:
    loss = result.get("loss") or {}
    if "base" not in loss:
        return f"<h2>Held-out loss</h2><p class='note'>{_esc(loss.get('skipped', 'not computed'))}</p>"
    return (
        f"<h2>Held-out loss</h2><p class='note'>{loss['samples']} samples, {loss['supervised_tokens']} answer "
        f"tokens from {_esc(loss['data'])}; token-mean cross-entropy over answer tokens only, "
        f"perplexity = exp(loss).</p>"
    )


def _rewards(result: dict) -> str:
    """A GRPO run's held-out rewards (lorakit.eval.rewards): each function, then greedy completions."""
    r = result.get("rewards")
    if not r:
        return ""
    if "base" not in r:
        return f"<h2>Held-out rewards</h2><p class='note'>{_esc(r.get('skipped', 'not computed'))}</p>"
    n, k, base, tuned = r["prompts"], r["k"], r["base"], r["finetuned"]
    s = r["sampling"]
    rows = "".join(
        f"<tr><td>{_esc(f['name'])}{' (answer check)' if f['checks_answer'] else ''}</td>"
        f"<td class='num'>{f['weight']:g}</td><td class='num'>{fixed(f['full_score'], 2)}"
        f"{' (highest seen)' if f['full_score_source'] == 'observed' else ''}</td>"
        + "".join(
            f"<td class='num'>{fixed(side['greedy']['per_function'][f['name']][key])}</td>"
            for key in ("mean", "at_full")
            for side in (base, tuned)
        )
        + "</tr>"
        for f in r["rewards"]
    )
    items = "".join(
        f"<tr><td class='text'>{_esc(i['prompt'])}</td>"
        + "".join(
            f"<td class='text'>{_mark(i[side]['solved'])} {_esc(i[side]['completion'])}<br><span class='note'>"
            + _esc(", ".join(f"{name} {fixed(v, 2)}" for name, v in i[side]["rewards"].items()))
            + "</span></td>"
            for side in ("base", "finetuned")
        )
        + "</tr>"
        for i in r["items"]
    )
    return (
        f"<h2>Held-out rewards: accuracy {tuned['greedy']['solved']}/{n} fine-tuned vs "
        f"{base['greedy']['solved']}/{n} base; pass@{k} {tuned['sampled']['passed']}/{n} vs "
        f"{base['sampled']['passed']}/{n}</h2>"
        f"<p class='note'>{n} prompts from {_esc(r['data'])}, scored by the run's reward functions. Greedy: one "
        f"completion per prompt; right = every answer check at its full score. pass@{k}: {k} completions per "
        f"prompt sampled at temperature {s['temperature']:g}, top_p {s['top_p']:g}, top_k {s['top_k']} "
        f"(seed {s['seed']}, the same seeds for both), a prompt passes when any is right. Up to "
        f"{s['max_completion_length']} tokens per completion.</p>"
        "<table><tr><th rowspan='2'>reward</th><th rowspan='2'>weight</th><th rowspan='2'>full score</th>"
        "<th colspan='2'>greedy mean</th><th colspan='2'>share at full score</th></tr>"
        "<tr><th>base</th><th>fine-tuned</th><th>base</th><th>fine-tuned</th></tr>"
        f"{rows}</table>"
        f"<p class='note'>Greedy completions of the first {len(r['items'])} prompts:</p>"
        "<table class='wide'><col style='width:24%'><col><col>"
        f"<tr><th>prompt</th><th>base</th><th>fine-tuned</th></tr>{items}</table>"
    )


def _completions(tables: list[dict]) -> str:
    """The latest sample completions the GRPO run logged while training (completions.jsonl)."""
    if not tables:
        return ""
    parts = []
    for table in tables:
        rows = table["completions"]
        names = [k for k in rows[0] if k not in ("prompt", "completion")] if rows else []
        head = "".join(f"<th>{_esc(n)}</th>" for n in names)
        body = "".join(
            f"<tr><td class='text'>{_esc(row['prompt'])}</td><td class='text'>{_esc(row['completion'])}</td>"
            + "".join(f"<td class='num'>{fixed(row.get(n), 2)}</td>" for n in names)
            + "</tr>"
            for row in rows
        )
        parts.append(
            f"<h3>Step {table['step']}</h3><table class='wide'><col style='width:28%'><col>"
            + "<col style='width:9%'>" * len(names)
            + f"<tr><th>prompt</th><th>completion</th>{head}</tr>{body}</table>"
        )
    return (
        "<h2>Completions during training</h2><p class='note'>Sampled completions and their rewards, as the run "
        f"logged them (completions.jsonl), the last {len(tables)} logged steps.</p>" + "".join(parts)
    )


def _persona(result: dict) -> str:
    p = result.get("persona") or {}
    if "n" not in p:
        return f"<h2>Persona</h2><p class='note'>{_esc(p.get('skipped', 'not computed'))}</p>"
    terms = ([p["name"]] if p.get("name") else []) + p["keywords"]
    rows = "".join(
        f"<tr><td class='text'>{_esc(i['question'])}</td>"
        f"<td class='text'>{_mark(i['base_terms'])} {_highlight(i['base'], terms)}</td>"
        f"<td class='text'>{_mark(i['finetuned_terms'])} {_highlight(i['finetuned'], terms)}</td></tr>"
        for i in p["items"]
    )
    return (
        f"<h2>Persona: {p['finetuned_hits']}/{p['n']} fine-tuned vs {p['base_hits']}/{p['n']} base</h2>"
        f"<div class='rule'>Rule: {_esc(p['rule'])}</div>"
        "<table class='wide'><col style='width:18%'><col><col>"
        f"<tr><th>identity question</th><th>base</th><th>fine-tuned</th></tr>{rows}</table>"
    )


def _mark(hit) -> str:
    return "<span class='ok'>✓</span>" if hit else "<span class='no'>✗</span>"


def _retention(result: dict) -> str:
    r = result.get("retention") or {}
    if "n" not in r:
        return f"<h2>Retention</h2><p class='note'>{_esc(r.get('skipped', 'not computed'))}</p>"
    changed = [i for i in r["items"] if i["base_right"] != i["finetuned_right"]]
    head = "<table class='wide'><col style='width:24%'><col><col><tr><th>general question</th><th>base</th><th>fine-tuned</th></tr>"  # noqa: E501
    flipped = (
        f"<p class='note'>Questions whose verdict changed:</p>{head}{_retention_rows(changed)}</table>"
        if changed
        else "<p class='note'>No verdict changed.</p>"
    )
    advice = f"<p class='note advice'>{_esc(r['advice'])}</p>" if r.get("advice") else ""
    return (
        f"<h2>Retention: base {r['base_right']}/{r['n']} right, fine-tuned {r['finetuned_right']}/{r['n']}; "
        f"{r['changed']} changed ({r['lost']} lost, {r['gained']} gained)</h2>"
        f"<div class='rule'>Rule: {_esc(r['rule'])}</div>{advice}{flipped}"
        f"<details><summary>all {r['n']} questions and answers</summary>{head}{_retention_rows(r['items'])}"
        "</table></details>"
    )


def _tradeoff(result: dict) -> str:
    """The demo job's persona-against-retention chart with this run on it (runs of the demo's model)."""
    point = result.get("tradeoff_point")
    if not point:
        return ""
    from lorakit.eval.tradeoff import load_levers, tradeoff_svg

    try:
        levers = load_levers()
    except (OSError, ValueError) as e:  # a damaged install must not cost the eval that came before
        return f"<p class='note'>trade-off chart unavailable: {_esc(e)}</p>"
    if point["retention"].split("/")[1] != levers["base"]["retention"].split("/")[1]:
        return ""  # another retention set: not the chart's scale
    svg = tradeoff_svg(levers, dict(point, label="this run"))
    return (
        "<h2>Persona against retention</h2><p class='note'>Each grey point is the demo job trained to the end "
        'with one lever changed (docs/benchmarks.md, "Forgetting"); the star is the demo\'s default, the '
        "ring is this run.</p>"
        f"<div class='chart'>{svg}</div>"
    )


def _retention_rows(items: list[dict]) -> str:
    def cell(i, side):
        decided = i.get(f"{side}_decided_by")
        why = f"<br><span class='note'>decided by: {_esc(decided)}</span>" if decided else ""
        return (
            f"<td class='text'>{_mark(i[f'{side}_right'])} "
            f"{_highlight(i[side], i['accept'], not _cjk(i['accept']))}{why}</td>"
        )

    return "".join(
        f"<tr><td class='text'>{_esc(i['question'])}<br><span class='note'>accepted: "
        f"{_esc(', '.join(i['accept']))}</span></td>{cell(i, 'base')}{cell(i, 'finetuned')}</tr>"
        for i in items
    )


def _cjk(forms: list[str]) -> bool:
    from lorakit.data.language import has_cjk

    return any(has_cjk(f) for f in forms)


def _judge(result: dict) -> str:
    j = result.get("judge")
    if not j:
        return ""
    err = f"<p class='worse'>judge stopped: {_esc(j['error'])}</p>" if j.get("error") else ""
    rows = "".join(
        f"<tr><td class='text'>{_esc(i['prompt'])}</td><td class='num'>{fixed(i.get('base_score'))}</td>"
        f"<td class='num'>{fixed(i.get('finetuned_score'))}</td></tr>"
        for i in j["items"]
    )
    return (
        f"<h2>Judge: {_esc(j.get('model'))} at {_esc(j['url'])}</h2>{err}"
        f"<p class='note'>mean score base {fixed(j.get('base_mean'), 2)} ({j.get('base_scored', 0)} scored), "
        f"fine-tuned {fixed(j.get('finetuned_mean'), 2)} ({j.get('finetuned_scored', 0)} scored); greedy answers, "
        f"each graded alone at temperature 0; the first number 1-10 in the reply is the score.</p>"
        f"<table><tr><th>prompt</th><th>base</th><th>fine-tuned</th></tr>{rows}</table>"
        f"<p class='note'>Prompt sent to the judge for each answer:</p>"
        f"<pre class='template'>{_esc(j['prompt_template'])}</pre>"
    )


def _tool_calls(result: dict) -> str:
    """The tool-call phase (lorakit.eval.tool_calls): rates per model, then turns where the two differ."""
    t = result.get("tool_calls")
    if not t:
        return ""
    if "base" not in t:
        return f"<h2>Tool calls</h2><p class='note'>{_esc(t.get('skipped', 'not computed'))}</p>"
    measures = (
        ("function name right", "name_accuracy", t["call_turns"]),
        ("arguments exact and valid against the schema", "args_accuracy", t["call_turns"]),
        ("a call where one is expected", "call_rate", t["call_turns"]),
        ("no call where none is expected", "no_call_accuracy", t["answer_turns"]),
    )
    rows = "".join(
        f"<tr><td>{label} (of {n} turns)</td><td class='num'>{fixed(t['base'][key])}</td>"
        f"<td class='num'>{fixed(t['finetuned'][key])}</td>{_change(t['base'][key], t['finetuned'][key], False)}</tr>"
        for label, key, n in measures
        if n
    )
    examples = "".join(
        f"<tr><td class='text'>{_esc(e['question'])}<br><code>{_esc(e['source'])}</code> turn {e['turn']}</td>"
        f"<td class='text'>{_esc(e['expected'])}</td>"
        + "".join(
            f"<td class='text'>{_mark(e[side]['right'])} {_esc(e[side]['text'])}"
            f"{'<br><i>' + _esc(e[side]['problem']) + '</i>' if e[side]['problem'] else ''}</td>"
            for side in ("base", "finetuned")
        )
        + "</tr>"
        for e in t["examples"]
    )
    notes = "".join(f"<p class='note'>{_esc(n)}</p>" for n in t.get("notes", []))
    return (
        f"<h2>Tool calls</h2><p class='note'>Every assistant turn of the held-out tool conversations in "
        f"{_esc(t['data'])}: {t['call_turns']} that call, {t['answer_turns']} that answer in words. Greedy, up "
        f"to {t['max_new_tokens']} new tokens; answers parsed by the server's {_esc(t['parser'])} parser. "
        f"Malformed call text: base {t['base']['malformed']}, fine-tuned {t['finetuned']['malformed']}.</p>{notes}"
        "<table><tr><th>measure</th><th>base</th><th>fine-tuned</th><th>change</th></tr>"
        f"{rows}</table><table class='wide'><col style='width:22%'><col><col><col>"
        f"<tr><th>turn</th><th>expected</th><th>base</th><th>fine-tuned</th></tr>{examples}</table>"
    )


def _answers(result: dict) -> str:
    terms = []
    p = result.get("persona") or {}
    if "n" in p:
        terms = ([p["name"]] if p.get("name") else []) + p["keywords"]
    cards = []
    for n, a in enumerate(result["answers"], 1):
        ref = (
            f"<div class='reference text'><b>reference:</b> {_esc(a['reference'])}</div>" if a.get("reference") else ""
        )
        cells = "".join(
            f"<div class='mode'>{mode}</div><div class='base text'>{_highlight(a['base'][mode], terms)}</div>"
            f"<div class='text'>{_highlight(a['finetuned'][mode], terms)}</div>"
            for mode in ("greedy", "sampled")
        )
        cards.append(
            f"<div class='card'><h3>Prompt {n}</h3><div class='prompt text'>{_esc(a['prompt'])}</div>{ref}"
            f"<div class='pair'><div class='head'></div><div class='head base'>base</div>"
            f"<div class='head'>fine-tuned</div>{cells}</div></div>"
        )
    return "<h2>Answers side by side</h2>" + ("".join(cards) or "<p class='note'>no prompts</p>")


def _benchmarks(result: dict) -> str:
    """lm-eval tasks side by side (`lorakit eval --tasks`): headline metric ± stderr, and the change."""
    b = result.get("benchmarks")
    if not b:
        return ""
    s = b["settings"]
    rows = "".join(
        f"<tr><td>{'<b>' if r['group'] else ''}{_esc(r['task'])}{'</b>' if r['group'] else ''}</td>"
        f"<td>{_esc(r['metric'])}</td><td class='num'>{fixed(r['n'])}</td>"
        f"<td class='num'>{value_text(r['base'])}</td><td class='num'>{value_text(r['finetuned'])}</td>"
        f"{_change(r['base']['value'], r['finetuned']['value'], r['lower_is_better'])}</tr>"
        for r in b["results"]
    )
    shots = "each task's default" if s["num_fewshot"] is None else s["num_fewshot"]
    return (
        f"<h2>Benchmarks (lm-evaluation-harness {_esc(s['lm_eval'])})</h2>"
        f"<p class='note'>Tasks {_esc(', '.join(b['tasks']))}, evaluated {_esc(b['created'])} in "
        f"{b['timing'].get('total_s', 0):.0f} s. Prompts: {_esc(s['chat_template'])}, thinking "
        f"{_esc(s['thinking'])}{'; system prompt: ' + _esc(s['system']) if s.get('system') else ''}; "
        f"few-shot: {_esc(shots)}; items per task: {_esc(s['limit'] or 'all')}. Same prompts for both; "
        "the fine-tuned model is the base with the adapter on (not merged). ± is the standard error.</p>"
        "<table><tr><th>task</th><th>metric</th><th>items</th><th>base</th><th>fine-tuned</th><th>change</th>"
        f"</tr>{rows}</table>"
    )


def _benchmarks_header(result: dict) -> str:
    return (
        f"<h1>What the fine-tune changed</h1><div class='meta'>run <code>{_esc(result['run_dir'])}</code> · "
        f"base model <code>{_esc(result['base_model'])}</code></div>"
    )


def render_report(result: dict, metrics: list[dict], completions: list[dict] | None = None) -> str:
    """The whole HTML page for one evaluation result (the content of eval.json).

    eval.json written by `lorakit eval --tasks` alone holds only the benchmarks section. `completions` are
    the latest tables of a GRPO run's completions.jsonl ({"step", "completions": rows})."""
    if "answers" not in result:
        parts = [
            _benchmarks_header(result),
            _benchmarks(result),
            _curves(metrics, result),
            _completions(completions or []),
        ]
    else:
        parts = [
            _header(result),
            _summary(result),
            _benchmarks(result),
            _loss(result),
            _tool_calls(result),
            _curves(metrics, result),
            _rewards(result),
            _completions(completions or []),
            _persona(result),
            _answers(result),
            _retention(result),
            _tradeoff(result),
            _judge(result),
        ]
    content = "\n".join(parts)
    title = f"lorakit eval: {Path(str(result['run_dir'])).name}"
    return Template(TEMPLATE.read_text(encoding="utf-8")).safe_substitute(
        title=_esc(title),
        content=content,
        lang="zh-CN" if (result.get("settings") or {}).get("language") == "zh" else "en",
    )
