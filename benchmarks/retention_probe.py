"""Retention and identity answers of a base model and one adapter (a run, or one of its checkpoints),
scored with lorakit's strict retention rule and persona rule; cheaper than a whole `lorakit eval`
(no held-out loss, no side-by-side prompts), so a lever can be compared at a checkpoint.

    python benchmarks/retention_probe.py RUN_DIR/checkpoints/checkpoint-30 --model smollm2-135m-instruct \
        --facts src/lorakit/assets/demo/persona_facts.json --out /tmp/probe.json [--lang en] [--threads 1]

Writes {"retention": {...}, "persona": {...}} in eval.json's shape (retention_agreement.py collect reads it).
Uses eval's own settings: greedy, 24 tokens for retention answers, 64 for identity answers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lorakit.eval import scores
from lorakit.eval.answers import RETENTION_MAX_TOKENS
from lorakit.inference.engine import Engine, SamplingParams


def answers(engine: Engine, questions: list[str], adapter: str | None, max_new_tokens: int) -> list[str]:
    done = engine.answer_batch(
        [[{"role": "user", "content": q}] for q in questions],
        SamplingParams(temperature=0, max_new_tokens=max_new_tokens),
        adapter,
    )
    return [a.text.strip() for a in done]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("adapter", type=Path)
    ap.add_argument("--model", required=True)
    ap.add_argument("--facts", type=Path, required=True, help="persona_facts.json")
    ap.add_argument("--lang", default="en")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    engine = Engine.load(args.model, {"ft": str(args.adapter)}, dtype="float32")
    items = scores.load_retention(language=args.lang)
    general = [i["question"] for i in items]
    identity = scores.identity_questions(args.lang)
    got = {
        side: (answers(engine, general, adapter, RETENTION_MAX_TOKENS), answers(engine, identity, adapter, 64))
        for side, adapter in (("base", None), ("finetuned", "ft"))
    }
    rule = scores.load_facts(args.facts)
    result = {
        "adapter": str(args.adapter),
        "language": args.lang,
        "retention": scores.score_retention(items, got["base"][0], got["finetuned"][0]),
        "persona": scores.score_persona(rule, identity, got["base"][1], got["finetuned"][1]),
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    r, p = result["retention"], result["persona"]
    print(
        f"retention base {r['base_right']}/{r['n']} fine-tuned {r['finetuned_right']}/{r['n']} "
        f"(lost {r['lost']}, gained {r['gained']}); persona identity base {p['base_hits']}/{p['n']} "
        f"fine-tuned {p['finetuned_hits']}/{p['n']}; {result['seconds']} s"
    )


if __name__ == "__main__":
    main()
