"""The training side of replay (lorakit.data.replay): the base model answers the replay prompts.

Lives here rather than in data/ because it loads a model; data/ stays free of models.
"""

from __future__ import annotations

import gc
from pathlib import Path


def add_replay(cfg, data, model_path: Path, tokenizer, device: str, cache_dir: Path):
    """`data` with cfg.data.replay's share of base-model answers to general prompts added to its train split."""
    from lorakit.data.prepare import tokenizer_fingerprint
    from lorakit.data.replay import MAX_NEW_TOKENS, model_fingerprint
    from lorakit.data.replay import add_replay as add

    def answer(messages: list[list[dict]]) -> list[str]:
        from lorakit.inference.engine import Engine
        from lorakit.inference.decoding import SamplingParams
        from lorakit.inference.reasoning import split_reasoning

        print(f"replay: the base model answers {len(messages)} general prompts (once; cached)", flush=True)
        engine = Engine.load(str(model_path), device=device)
        thinking = {"off": False, "on": True}.get(cfg.data.thinking)
        ids = [engine.chat_prompt(m, enable_thinking=thinking) for m in messages]
        done = engine.generate_batch(ids, SamplingParams(temperature=0, max_new_tokens=MAX_NEW_TOKENS))
        texts = [split_reasoning(d.text, engine.opens_reasoning(i))[1] for d, i in zip(done, ids)]
        del engine
        gc.collect()
        return texts

    fingerprint = model_fingerprint(model_path, tokenizer_fingerprint(tokenizer))
    return add(cfg.data, data, tokenizer, answer, fingerprint, Path(cache_dir))
