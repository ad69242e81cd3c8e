"""Persona against retention: what each lever of the demo job traded, and advice when a run forgot.

assets/demo/levers.json holds benchmarks/forgetting_sweep.py's measurements (the demo job trained to
the end per lever and scored by `lorakit eval`; the doc it names explains them), with the model they
were measured on. The chart of them goes into docs/ and into the report of a run of that model, with
that run as one more point. Every figure quoted here comes from that file, never from this code.
"""

from __future__ import annotations

import json
from pathlib import Path

LEVERS = Path(__file__).resolve().parents[1] / "assets" / "demo" / "levers.json"


def load_levers(path: Path = LEVERS) -> dict:
    """{"model", "doc", "targets": {...}, "base": {...}, "rows": [...]} as the sweep wrote them."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _read_levers() -> dict | None:
    """The bundled levers, or None when the install's copy is damaged (advice and chart then do without)."""
    try:
        return load_levers()
    except (OSError, ValueError):
        return None


def _hits(text: str) -> tuple[int, int]:
    right, n = text.split("/")
    return int(right), int(n)


def tradeoff_point(model: str, persona: dict, retention: dict, levers: dict | None = None) -> dict | None:
    """This run's place on the measured chart ({"persona": "11/12", "retention": "16/24"}), or None.

    Only a run of the model the levers were measured on has one: another model is another curve.
    """
    levers = _read_levers() if levers is None else levers
    side = (persona or {}).get("side_by_side") or {}
    if not levers or levers.get("model") != model or not side.get("n") or "n" not in retention:
        return None
    return {
        "persona": f"{side['finetuned_hits']}/{side['n']}",
        "retention": f"{retention['finetuned_right']}/{retention['n']}",
    }


def advice(retention: dict, replay_share: float, levers: dict | None = None) -> str | None:
    """One line for a run whose fine-tune answers at least 2 fewer general questions than its base."""
    if "n" not in retention:
        return None
    drop = retention["base_right"] - retention["finetuned_right"]
    if drop < 2:
        return None
    levers = _read_levers() if levers is None else levers
    said = f"Retention fell by {drop} of {retention['n']} general questions."
    doc = (levers or {}).get("doc", "docs/benchmarks.md")
    if replay_share:
        return (
            f"{said} A larger data.replay than {replay_share:g}, or fewer epochs, keeps more general "
            f"ability at some persona strength ({doc})."
        )
    measured = _replay_measured(levers)
    if measured is None:
        return f"{said} data.replay trains on the base model's own answers to general prompts and keeps them ({doc})."
    setting, without, with_it = measured
    return (
        f"{said} {setting} trains on the base model's own answers to general prompts and keeps "
        f"them (the demo job: {without} without it, {with_it} with it; {doc})."
    )


def _replay_measured(levers: dict | None) -> tuple[str, str, str] | None:
    """(the demo default's data.replay override, retention with no lever, retention of the default)."""
    rows = (levers or {}).get("rows") or []
    plain = next((r for r in rows if not r.get("overrides")), None)
    chosen = next((r for r in rows if r.get("chosen")), None)
    setting = next((o for o in (chosen or {}).get("overrides", []) if o.startswith("data.replay=")), None)
    if plain is None or setting is None:
        return None
    return setting, plain["retention"], chosen["retention"]


def tradeoff_svg(levers: dict, here: dict | None = None) -> str:
    """Scatter of side-by-side persona hits against retention per lever, the target zone shaded; inline SVG.

    `here` = {"label", "persona": "11/12", "retention": "16/24"} adds this run's point."""
    import matplotlib.patches

    from lorakit.figures import Chart, svg_inline

    rows, targets, base = levers["rows"], levers["targets"], levers["base"]
    _, n_ret = _hits(base["retention"])
    _, n_per = _hits(rows[0]["side_by_side"])
    xs = [_hits(r["retention"])[0] for r in rows] + [_hits(base["retention"])[0]]
    x_lo, x_hi = min(xs) - 1, min(n_ret, max(xs) + 2) + 0.5
    fig = Chart(figsize=(10, 4), dpi=96)
    ax = fig.add_subplot()
    # both targets at once: retention and side-by-side persona
    ax.add_patch(
        matplotlib.patches.Rectangle(
            (targets["retention"] - 0.5, targets["side_by_side"] - 0.5),
            x_hi - targets["retention"] + 0.5,
            n_per - targets["side_by_side"] + 1.3,
            color="#e6f4ea",
            zorder=0,
            label="targets met",
        )
    )
    for i, r in enumerate(rows, 1):
        x, _ = _hits(r["retention"])
        y, _ = _hits(r["side_by_side"])
        chosen = r.get("chosen")
        ax.scatter(
            [x],
            [y],
            s=90 if chosen else 30,
            color="#1a73e8" if chosen else "#5f6368",
            zorder=3,
            marker="*" if chosen else "o",
            label=f"{i}: {r['label']} (loss {r['heldout_loss']:.3f}){' - default' if chosen else ''}",
        )
        # points often coincide: numbers stacked by how many came before at the same place
        same = sum(
            1 for q in rows[: i - 1] if (q["retention"], q["side_by_side"]) == (r["retention"], r["side_by_side"])
        )
        ax.annotate(str(i), (x, y), fontsize=8, xytext=(5 + 9 * same, 2), textcoords="offset points")
    x0, _ = _hits(base["retention"])
    ax.scatter([x0], [0], color="#d93025", marker="s", s=30, zorder=3, label="base model")
    if here:
        x, _ = _hits(here["retention"])
        y, _ = _hits(here["persona"])
        ax.scatter(
            [x], [y], s=160, facecolors="none", edgecolors="#e37400", linewidths=2, zorder=4, label=here["label"]
        )
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(-0.8, n_per + 0.8)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_xlabel(f"retention: general questions right (of {n_ret}, strict rule)")
    ax.set_ylabel(f"persona, side by side (of {n_per})")
    ax.set_title("the demo job per lever: persona against retention", fontsize=9)
    ax.grid(alpha=0.3)
    return svg_inline(fig)
