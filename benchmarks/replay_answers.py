"""Write lorakit's bundled replay answers for a config's model (the demo's by default), timing them.

The base model answers every bundled replay prompt of a language, greedily, exactly as `data.replay`
does on first use; the answers go to src/lorakit/assets/replay/answers/<cache key>.json, where a
training run with the same model and settings finds them instead of generating. The demo ships the
SmolLM2 answers so that its first run does not spend minutes on them.

    python benchmarks/replay_answers.py [--config configs/demo.yaml] [--lang en] [--threads 2]

Prints the generation time (docs/benchmarks.md, "Forgetting"). Rerun it when the demo model, the
tokenizer, the chat template or the replay prompts change: tests/unit/test_replay.py fails until then.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--lang", default="en", choices=["en", "zh"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from lorakit import load_config
    from lorakit.atomic import write_text
    from lorakit.data import replay
    from lorakit.models import load_tokenizer, resolve_model
    from lorakit.training.replay_answers import base_model_answerer, replay_fingerprint

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    model_path = resolve_model(cfg.model.name, cfg.model.source, cfg.model.cache_dir)
    key = replay.cache_key(
        replay_fingerprint(model_path, load_tokenizer(model_path)), cfg.data.system, cfg.data.thinking
    )
    prompts = replay.bundled_prompts(args.lang)
    bundled = replay.BUNDLED_ANSWERS / f"{key}.json"
    with tempfile.TemporaryDirectory() as tmp:
        # an empty cache and no shipped answers: every answer is generated here
        replay.BUNDLED_ANSWERS = Path(tmp) / "none"
        started = time.perf_counter()
        answers, origin = replay.base_answers(
            prompts, cfg.data.system, base_model_answerer(cfg, model_path, "cpu"), Path(tmp) / bundled.name
        )
        seconds = time.perf_counter() - started
    # answers of the other language shipped under this key stay
    old = json.loads(bundled.read_text(encoding="utf-8")) if bundled.is_file() else []
    entries = [e for e in old if e["prompt"] not in set(prompts)] + [
        {"prompt": p, "answer": a} for p, a in zip(prompts, answers)
    ]
    write_text(bundled, json.dumps(entries, ensure_ascii=False, indent=1) + "\n")
    print(
        json.dumps(
            {
                "model": cfg.model.name,
                "language": args.lang,
                "prompts": len(prompts),
                "generated": origin["replay_generated"],
                "seconds": round(seconds, 1),
                "answer_chars": sum(len(a) for a in answers),
                "threads": args.threads,
                "file": str(bundled.relative_to(ROOT)),
            }
        )
    )


if __name__ == "__main__":
    main()
