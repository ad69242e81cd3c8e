"""The preference demo end to end: SFT demo, then DPO on top, measured against SFT alone.

    python benchmarks/dpo_demo.py --work /tmp/dpo-demo [--sft /tmp/demo-sft] [--threads 2]

1. the SFT demo (configs/demo.yaml) into WORK/sft, unless --sft names a finished run of it;
2. `lorakit merge` of it into WORK/merged: the SFT persona as a plain model folder;
3. DPO (configs/demo-dpo.yaml) on that folder into WORK/dpo: its reference, the base with the adapter
   off, is then the SFT model itself;
4. `lorakit eval` of the DPO run with the demo's settings (the 12 held-out questions side by side, 64
   new tokens): its "base" is SFT alone and its "fine-tuned" SFT then DPO, on the same prompts, the same
   retention questions (strict rule) and the same held-out answers (the chosen side of
   assets/demo/heldout_pairs.json, i.e. assets/demo/heldout.json's in-character answers).

Prints one JSON line per stage (seconds) and the table for docs/benchmarks.md ("Preference tuning").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "lorakit" / "assets" / "demo"


def stage(name: str, fn):
    started = time.perf_counter()
    out = fn()
    print(json.dumps({"stage": name, "seconds": round(time.perf_counter() - started, 1)}), flush=True)
    return out


def table(result: dict) -> str:
    """Markdown rows: SFT alone (the DPO run's base) against SFT then DPO (its fine-tune)."""
    p, r, loss, pref = result["persona"], result["retention"], result["loss"], result.get("preference", {})
    rows = ["| | SFT alone | SFT then DPO |", "|---|---|---|"]

    def row(what, base, tuned):
        rows.append(f"| {what} | {base} | {tuned} |")

    if "base_hits" in p:
        row("persona, identity questions", f"{p['base_hits']}/{p['n']}", f"{p['finetuned_hits']}/{p['n']}")
        s = p.get("side_by_side", {})
        if s:
            row(
                "persona, held-out questions side by side",
                f"{s['base_hits']}/{s['n']}",
                f"{s['finetuned_hits']}/{s['n']}",
            )
    if "base_right" in r:
        row(
            "retention, general questions (strict rule)",
            f"{r['base_right']}/{r['n']}",
            f"{r['finetuned_right']}/{r['n']}",
        )
    if "base" in loss:
        row("held-out persona loss", f"{loss['base']['loss']:.3f}", f"{loss['finetuned']['loss']:.3f}")
    if "base" in pref:
        b, f = pref["base"], pref["finetuned"]
        row(
            "held-out pairs: in-character answer more likely than the base model's",
            f"{b['accuracy']:.0%}",
            f"{f['accuracy']:.0%}",
        )
        row("held-out pairs: log-prob margin, chosen - rejected", f"{b['margin']:+.1f}", f"{f['margin']:+.1f}")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, help="folder for the runs (outside the repository)")
    ap.add_argument("--sft", help="a finished run of configs/demo.yaml to start from (else trained here)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-train", action="store_true", help="reuse WORK/dpo as it is; only evaluate")
    args = ap.parse_args()

    import lorakit

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sft = Path(args.sft) if args.sft else work / "sft"
    if not args.sft:
        stage(
            "sft",
            lambda: lorakit.train(
                str(ROOT / "configs" / "demo.yaml"), **{"train.output_dir": str(sft), "train.threads": args.threads}
            ),
        )
    merged = work / "merged"
    if not (merged / "config.json").is_file():
        stage("merge", lambda: lorakit.merge(sft, merged))
    dpo = work / "dpo"
    if not args.skip_train:
        stage(
            "dpo",
            lambda: lorakit.train(
                str(ROOT / "configs" / "demo-dpo.yaml"),
                overwrite=True,
                **{"model.name": str(merged), "train.output_dir": str(dpo), "train.threads": args.threads},
            ),
        )
    result = stage(
        "eval", lambda: lorakit.evaluate(dpo, prompts=str(DEMO / "heldout.json"), max_new_tokens=64, max_prompts=12)
    )
    (work / "dpo_demo_table.md").write_text(table(result) + "\n")
    print(table(result))
    print(json.dumps({"timing": result.get("timing"), "preference": result.get("preference")}))


if __name__ == "__main__":
    main()
