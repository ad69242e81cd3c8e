"""The headline numbers of an eval and how they are written: one home for report.html and the terminal.

`summary_rows` picks the numbers from eval.json; `verdict` says whether a change went the good way
(the colour both outputs give it); the formatters write values and changes the same everywhere.
"""

from __future__ import annotations

__all__ = ["summary_rows", "reward_rows", "verdict", "short", "fixed", "signed_change", "value_text"]

DASH = "–"  # a value that is missing (a side not computed)


def summary_rows(result: dict) -> list[tuple[str, object, object, bool]]:
    """(label, base, fine-tuned, lower_is_better) for the headline numbers of eval.json."""
    rows = []
    loss = result.get("loss") or {}
    if "base" in loss:
        rows.append(("held-out loss", loss["base"]["loss"], loss["finetuned"]["loss"], True))
        rows.append(("held-out perplexity", loss["base"]["ppl"], loss["finetuned"]["ppl"], True))
    persona = result.get("persona") or {}
    if "n" in persona:
        rows.append(
            (f"persona, identity questions (of {persona['n']})", persona["base_hits"], persona["finetuned_hits"], False)
        )
        side = persona.get("side_by_side") or {}
        if side.get("n"):
            rows.append(
                (f"persona, side-by-side greedy (of {side['n']})", side["base_hits"], side["finetuned_hits"], False)
            )
    retention = result.get("retention") or {}
    if "n" in retention:
        rows.append(
            (f"retention right (of {retention['n']})", retention["base_right"], retention["finetuned_right"], False)
        )
    pref = result.get("preference") or {}
    if "pairs" in pref:  # held-out preference pairs (lorakit.eval.preference)
        n = pref["pairs"]
        rows.append(
            (
                f"held-out pairs, chosen answer more likely (of {n})",
                round(pref["base"]["accuracy"] * n),
                round(pref["finetuned"]["accuracy"] * n),
                False,
            )
        )
        rows.append(
            (
                "held-out pairs, log-prob margin chosen - rejected",
                pref["base"]["margin"],
                pref["finetuned"]["margin"],
                False,
            )
        )
        rows.append(
            (
                f"held-out pairs, implicit reward margin (beta {pref['beta']:g}, reference = base)",
                0.0,
                pref["rewards"]["margin"],
                False,
            )
        )
    if "undesirable" in pref:  # a KTO run's held-out answers (lorakit.eval.unpaired)
        rewards, beta = pref["rewards"], pref["beta"]
        if rewards["accuracy"] is not None:
            rows.append(
                (
                    f"held-out answers, desirable rewarded above undesirable (share, beta {beta:g}, reference = base)",
                    0.5,
                    rewards["accuracy"],
                    False,
                )
            )
        rows.append(
            (
                f"held-out answers, implied reward margin desirable - undesirable (beta {beta:g})",
                0.0,
                rewards["margin"],
                False,
            )
        )
    rows += tool_call_rows(result.get("tool_calls") or {})
    rows += reward_rows(result.get("rewards") or {})
    judge = result.get("judge") or {}
    if judge.get("base_mean") is not None or judge.get("finetuned_mean") is not None:
        rows.append(("judge score (1-10)", judge.get("base_mean"), judge.get("finetuned_mean"), False))
    return rows


def tool_call_rows(calls: dict) -> list[tuple[str, object, object, bool]]:
    """The tool-call phase's counts (lorakit.eval.tool_calls): calls right, and no call where none is due."""
    if "base" not in calls:
        return []
    n, k = calls["call_turns"], calls["answer_turns"]
    base, tuned = calls["base"], calls["finetuned"]
    rows = []
    if n:
        rows += [
            (f"tool calls, function name right (of {n})", base["name_right"], tuned["name_right"], False),
            (f"tool calls, arguments exact and valid (of {n})", base["args_right"], tuned["args_right"], False),
        ]
    if k:
        rows.append(
            (f"tool calls, none where none is due (of {k})", base["no_call_right"], tuned["no_call_right"], False)
        )
    return rows


def reward_rows(scored: dict) -> list[tuple[str, object, object, bool]]:
    """A GRPO run's held-out rewards (lorakit.eval.rewards): greedy accuracy and rewards, then pass@k."""
    if "base" not in scored:
        return []
    n, k, base, tuned = scored["prompts"], scored["k"], scored["base"], scored["finetuned"]
    rows = [
        (f"held-out accuracy, greedy (of {n} prompts)", base["greedy"]["solved"], tuned["greedy"]["solved"], False),
        ("held-out reward, greedy mean", base["greedy"]["reward"], tuned["greedy"]["reward"], False),
    ]
    for name, b in base["greedy"]["per_function"].items():
        rows.append((f"  reward {name}, greedy mean", b["mean"], tuned["greedy"]["per_function"][name]["mean"], False))
    rows.append(
        (f"held-out pass@{k}, sampled (of {n} prompts)", base["sampled"]["passed"], tuned["sampled"]["passed"], False)
    )
    rows.append(
        (
            f"held-out reward, sampled mean ({k} per prompt)",
            base["sampled"]["reward"],
            tuned["sampled"]["reward"],
            False,
        )
    )
    return rows


def verdict(delta, lower_is_better: bool) -> str:
    """ "better" or "worse" by the direction that is good for the measure; "" for no change."""
    if delta == 0:
        return ""
    good = delta < 0 if lower_is_better else delta > 0
    return "better" if good else "worse"


def short(x) -> str:
    """A value in 4 significant digits (the terminal table)."""
    if x is None:
        return DASH
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def fixed(x, digits: int = 4) -> str:
    """A value with `digits` decimals, very large or small floats in scientific notation (report.html)."""
    if x is None:
        return DASH
    if isinstance(x, float) and (x >= 1e5 or (x and abs(x) < 1e-3)):
        return f"{x:.3e}"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def signed_change(base, tuned) -> str:
    """tuned - base, signed, with the relative change for float measures (report.html)."""
    delta = tuned - base
    if isinstance(delta, float):
        text = f"{delta:+.4g}" if abs(delta) >= 1000 else f"{delta:+.4f}"
    else:
        text = f"{delta:+d}"
    if isinstance(base, float) and base and abs(base) < 1e5:
        text += f" ({100 * delta / base:+.1f}%)"
    return text


def value_text(side: dict) -> str:
    """A benchmark value with its standard error: "0.2500 ± 0.0100"."""
    if side.get("value") is None:
        return DASH
    err = f" ± {side['stderr']:.4f}" if side.get("stderr") is not None else ""
    return f"{side['value']:.4f}{err}"
