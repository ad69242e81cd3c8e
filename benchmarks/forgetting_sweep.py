"""The demo job (configs of `lorakit demo`) trained to the end once per lever, then scored with the real
`lorakit eval` exactly as the demo runs it: persona on identity questions and on the 12 held-out questions
side by side, retention under the strict rule, held-out loss, and the wall-clock of training and eval.

    python benchmarks/forgetting_sweep.py --out /tmp/sweep defaults replay=data.replay=0.25 \
        lr=train.lr=2.5e-4 [NAME=KEY=VALUE[,KEY=VALUE...] ...]

Each argument is a variant: `defaults` (no override) or NAME=overrides (comma-separated key=value).
Runs are sequential (each uses every core) and kept under --out; a variant whose eval.json exists is read
back, not rerun. Prints a Markdown table (docs/benchmarks.md, "Forgetting") and writes OUT/sweep.json.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "src" / "lorakit" / "assets" / "demo"
LORAKIT = [sys.executable, "-m", "lorakit"]


def _variant(arg: str) -> tuple[str, list[str]]:
    if arg == "defaults":
        return arg, []
    name, _, rest = arg.partition("=")
    if not rest:
        raise SystemExit(f"{arg}: give NAME=key=value[,key=value...]")
    # commas inside a value ("lora.target_modules=[q_proj,v_proj]") do not split: only before "key="
    return name, re.split(r",(?=[A-Za-z_][\w.]*=)", rest)


def _run(cmd: list, log: Path) -> float:
    started = time.perf_counter()
    with log.open("w") as f:
        done = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed; see {log}")
    return time.perf_counter() - started


def measure(out: Path, name: str, overrides: list[str]) -> dict:
    run = out / name / "run"
    row_file = out / name / "row.json"
    if row_file.is_file():
        return json.loads(row_file.read_text())
    (out / name).mkdir(parents=True, exist_ok=True)
    train_s = _run(
        [
            *LORAKIT,
            "train",
            DEMO / "demo.yaml",
            f"data.path={DEMO / 'persona.json'}",
            f"train.output_dir={run}",
            *overrides,
        ],
        out / name / "train.log",
    )
    # the demo's own eval: held-out questions side by side, 64 tokens, 12 prompts
    eval_s = _run(
        [*LORAKIT, "eval", run, "--prompts", DEMO / "heldout.json", "--max-new-tokens", 64, "--max-prompts", 12],
        out / name / "eval.log",
    )
    result = json.loads((run / "eval.json").read_text())
    summary = json.loads((run / "run.json").read_text())
    persona, kept = result["persona"], result["retention"]
    row = {
        "variant": name,
        "overrides": overrides,
        "steps": summary.get("steps"),
        "train_s": round(train_s, 1),
        "eval_s": round(eval_s, 1),
        "identity": f"{persona['finetuned_hits']}/{persona['n']}",
        "side_by_side": f"{persona['side_by_side']['finetuned_hits']}/{persona['side_by_side']['n']}",
        "retention": f"{kept['finetuned_right']}/{kept['n']}",
        "retention_base": f"{kept['base_right']}/{kept['n']}",
        "lost": kept["lost"],
        "gained": kept["gained"],
        "heldout_loss": round(result["loss"]["finetuned"]["loss"], 4)
        if result.get("loss", {}).get("finetuned")
        else None,
    }
    row_file.write_text(json.dumps(row))
    return row


def _label(row: dict) -> str:
    """ "replay=0.25 epochs=2.25" for data.replay=0.25,train.epochs=2.25; "no lever" for the old defaults."""
    return " ".join(o.split(".", 1)[-1] for o in row["overrides"]) or "no lever"


def write_levers(rows: list[dict], chosen: str) -> None:
    """The rows as lorakit's bundled trade-off data and the docs' chart (lorakit.eval.tradeoff)."""
    from lorakit.config import load_config
    from lorakit.eval.tradeoff import LEVERS, tradeoff_svg

    if chosen not in {r["variant"] for r in rows}:
        raise SystemExit(f"--chosen {chosen}: not among the variants given")
    n = rows[0]["retention_base"].split("/")[1]
    levers = {
        "measured": "benchmarks/forgetting_sweep.py: the demo job trained to the end per lever, scored by lorakit eval",
        # runs of this model get the chart in their report; the doc explains the figures
        "model": load_config(DEMO / "demo.yaml").model.name,
        "doc": 'docs/benchmarks.md, "Forgetting"',
        "targets": {
            "identity": 6,
            "side_by_side": 11,
            "retention": int(rows[0]["retention_base"].split("/")[0]) - 1,
            "heldout_loss": 2.384,
        },
        "base": {"retention": rows[0]["retention_base"], "n": int(n)},
        "rows": [
            {
                "label": r.get("label") or _label(r),
                "chosen": r["variant"] == chosen,
                **{
                    k: r[k]
                    for k in ("variant", "overrides", "steps", "identity", "side_by_side", "retention", "heldout_loss")
                },
            }
            for r in rows
        ],
    }
    LEVERS.write_text(json.dumps(levers, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    docs = Path(__file__).resolve().parents[1] / "docs" / "forgetting.svg"
    docs.write_text(tradeoff_svg(levers) + "\n", encoding="utf-8")
    print(f"wrote {LEVERS} and {docs}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variants", nargs="+")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--chosen",
        help="the demo's default variant: write these rows to assets/demo/levers.json "
        "and the chart to docs/forgetting.svg, that variant starred",
    )
    args = ap.parse_args()
    rows = []
    for arg in args.variants:
        name, overrides = _variant(arg)
        rows.append(measure(args.out, name, overrides))
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "sweep.json").write_text(json.dumps(rows, indent=1))
    if args.chosen:
        write_levers(rows, args.chosen)
    print(
        "\n| variant | overrides | steps | train s | eval s | identity | side by side | retention (base) "
        "| lost / gained | held-out loss |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['variant']} | {' '.join(r['overrides']) or '—'} | {r['steps']} | {r['train_s']} | {r['eval_s']} "
            f"| {r['identity']} | {r['side_by_side']} | {r['retention']} ({r['retention_base']}) "
            f"| {r['lost']} / {r['gained']} | {r['heldout_loss']} |"
        )


if __name__ == "__main__":
    main()
