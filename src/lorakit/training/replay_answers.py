"""The training side of replay (lorakit.data.replay): the base model answers the replay prompts.

Lives here rather than in data/ because it loads a model; data/ stays free of models.
"""

from __future__ import annotations

import gc
from pathlib import Path


def base_model_answerer(cfg, model_path: Path, device: str):
    """An Answerer (lorakit.data.replay) that loads the base model, answers greedily, and frees it."""

    def answer(messages: list[list[dict]]) -> list[str]:
        from lorakit.data.replay import MAX_NEW_TOKENS
        from lorakit.inference.engine import Engine, SamplingParams

        print(f"replay: the base model answers {len(messages)} general prompts (once; cached)", flush=True)
        engine = Engine.load(str(model_path), device=device)
        done = engine.answer_batch(
            messages, SamplingParams(temperature=0, max_new_tokens=MAX_NEW_TOKENS), thinking=cfg.data.thinking
        )
        del engine
        gc.collect()
        return [a.text for a in done]

    return answer


def replay_fingerprint(model_path: Path, tokenizer) -> str:
    """The model part of the replay cache key."""
    from lorakit.data.prepared import tokenizer_fingerprint
    from lorakit.data.replay import model_fingerprint

    return model_fingerprint(model_path, tokenizer_fingerprint(tokenizer))


def add_base_answers(cfg, data, model_path: Path, tokenizer, device: str, cache_dir: Path):
    """`data` with cfg.data.replay's share of base-model answers to general prompts added to its train
    split (lorakit.data.replay.add_replay, with this module's answerer), and a line saying so."""
    from lorakit.data.replay import add_replay

    data = add_replay(
        cfg.data,
        data,
        tokenizer,
        base_model_answerer(cfg, model_path, device),
        replay_fingerprint(model_path, tokenizer),
        Path(cache_dir),
    )
    st = data.stats
    if st.get("replay_wanted"):
        print(
            f"replay: {st['replay_samples']} of {len(data.train)} training samples are the base model's answers "
            f"to {st['replay_source']} ({st['replay_generated']} generated now, the rest cached or shipped)",
            flush=True,
        )
    return data
