"""Write the preference demo's pairs: the persona's answer (chosen) against the base model's (rejected).

For every prompt of the persona demo (assets/demo/persona.json, the training pairs) and of its held-out
questions (assets/demo/heldout.json, the held-out pairs `lorakit eval` scores), the demo's base model
(SmolLM2-135M-Instruct) answers once, greedily, with thinking off, exactly as replay answers are made
(lorakit.data.replay: the same token budget, cut back to the last finished sentence). Each pair is
`{"prompt", "chosen", "rejected"}` with chosen = the in-character answer and rejected = what the base
model says to the same prompt: DPO then pushes the tuned model away from the base's generic assistant
voice and toward the persona.

    python benchmarks/dpo_demo_pairs.py [--threads 2]

Writes src/lorakit/assets/demo/persona_pairs.json and heldout_pairs.json (atomically; greedy decoding,
so a rerun on the same model writes the same bytes) and prints the generation time. Rerun it when the
demo model, its chat template or the persona data change.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "lorakit" / "assets" / "demo"
MODEL = "smollm2-135m-instruct"
# source file -> pairs file
SETS = {"persona.json": "persona_pairs.json", "heldout.json": "heldout_pairs.json"}


def user_text(record: dict) -> str:
    """The user turn the SFT demo trains on: alpaca joins instruction and input with a newline."""
    return "\n".join(x for x in (record["instruction"], record.get("input", "")) if x and x.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from lorakit.atomic import write_text
    from lorakit.data.replay import MAX_NEW_TOKENS, complete_sentences
    from lorakit.inference.decoding import SamplingParams
    from lorakit.inference.engine import Engine
    from lorakit.inference.reasoning import split_reasoning

    torch.set_num_threads(args.threads)
    engine = Engine.load(MODEL, device="cpu")
    sets = {src: json.loads((DEMO / src).read_text(encoding="utf-8")) for src in SETS}
    prompts = sorted({user_text(r) for records in sets.values() for r in records})
    started = time.perf_counter()
    ids = [engine.chat_prompt([{"role": "user", "content": p}], enable_thinking=False) for p in prompts]
    done = engine.generate_batch(ids, SamplingParams(temperature=0, max_new_tokens=MAX_NEW_TOKENS))
    seconds = time.perf_counter() - started
    base = {
        p: complete_sentences(split_reasoning(d.text, engine.opens_reasoning(i))[1])
        for p, d, i in zip(prompts, done, ids)
    }
    counts = {}
    for src, dst in SETS.items():
        pairs = [{"prompt": user_text(r), "chosen": r["output"], "rejected": base[user_text(r)]} for r in sets[src]]
        # a pair whose sides agree teaches nothing and is refused by the preference reader
        pairs = [p for p in pairs if p["chosen"].strip() != p["rejected"].strip() and p["rejected"].strip()]
        write_text(DEMO / dst, json.dumps(pairs, ensure_ascii=False, indent=1) + "\n")
        counts[dst] = len(pairs)
    print(
        json.dumps(
            {
                "model": MODEL,
                "prompts": len(prompts),
                "seconds": round(seconds, 1),
                "threads": args.threads,
                "pairs": counts,
            }
        )
    )


if __name__ == "__main__":
    main()
