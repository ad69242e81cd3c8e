"""How often the strict retention rule agrees with hand labels.

Two steps:

    # 1. collect the retention answers of real eval runs into a file to label by hand
    python benchmarks/retention_agreement.py collect RUN_DIR/eval.json [...] --out benchmarks/retention_labels.json
    # 2. after setting every "right" to true or false by hand: the agreement
    python benchmarks/retention_agreement.py score benchmarks/retention_labels.json

`score` also reports the earlier loose rule (an accepted form anywhere in the answer, as a whole word),
so the two rules can be compared on the same labels. Reaches lorakit only through its public modules.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lorakit.eval import scores


def collect(eval_files: list[Path], out: Path) -> None:
    """Every distinct (question, answer) pair of the runs' retention items, unlabelled ("right": null)."""
    seen, rows = set(), []
    if out.is_file():  # keep labels already given
        rows = json.loads(out.read_text(encoding="utf-8"))
        seen = {(r["question"], r["reply"]) for r in rows}
    for f in eval_files:
        result = json.loads(Path(f).read_text(encoding="utf-8"))
        for item in result["retention"]["items"]:
            for side in ("base", "finetuned"):
                key = (item["question"], item[side])
                if key not in seen:
                    seen.add(key)
                    rows.append(
                        {
                            "question": item["question"],
                            "reply": item[side],
                            "model": side,
                            "run": str(Path(f).parent.name),
                            "right": None,
                        }
                    )
    out.write_text("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n]\n", encoding="utf-8")
    print(f"{out}: {len(rows)} answers, {sum(r['right'] is None for r in rows)} to label")


def _loose(item: dict, reply: str) -> bool:
    return bool(scores.find_terms(reply, item["accept"], whole_words=True))


def score(labels_file: Path) -> dict:
    rows = json.loads(labels_file.read_text(encoding="utf-8"))
    items = {i["question"]: i for lang in ("en", "zh") for i in scores.load_retention(language=lang)}
    labelled = [r for r in rows if r["right"] is not None]
    out = {"labelled": len(labelled)}
    for name, rule in (("strict", lambda i, a: scores.judge_retention(i, a)[0]), ("loose", _loose)):
        verdicts = [(rule(items[r["question"]], r["reply"]), r["right"]) for r in labelled]
        agree = sum(v == lab for v, lab in verdicts)
        out[name] = {
            "agree": agree,
            "agreement": round(agree / len(verdicts), 3),
            "false_right": sum(v and not lab for v, lab in verdicts),
            "false_wrong": sum(lab and not v for v, lab in verdicts),
        }
    out["disagreements"] = [
        {"question": r["question"], "reply": r["reply"], "label": r["right"]}
        for r in labelled
        if scores.judge_retention(items[r["question"]], r["reply"])[0] != r["right"]
    ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("eval_json", nargs="+", type=Path)
    c.add_argument("--out", type=Path, default=Path(__file__).with_name("retention_labels.json"))
    s = sub.add_parser("score")
    s.add_argument("labels", type=Path, nargs="?", default=Path(__file__).with_name("retention_labels.json"))
    args = ap.parse_args()
    if args.cmd == "collect":
        collect(args.eval_json, args.out)
    else:
        print(json.dumps(score(args.labels), ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
