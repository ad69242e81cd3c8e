"""The eval's held-out phase: the samples to score (as training tokenized them) and the loss of both
models on them, the base with the adapter switched off and the fine-tune with it on."""

from __future__ import annotations

import contextlib

from lorakit.models.lora import adapter_off


def heldout_data(cfg, tokenizer, data: str | None, bare: bool) -> dict:
    """Held-out samples (tokenized as in training) and their conversations (for prompts)."""
    from lorakit.data import prepare_splits
    from lorakit.data.prepared import split_conversations
    from lorakit.models import cache_root

    cache = cache_root(cfg.model.cache_dir) / "prepared"
    if data:
        # The file becomes the "training" split of a copy of the run's data settings: same
        # template, thinking, masking and max_length as training, no split, no mixing, no cap.
        dcfg = cfg.data.model_copy(
            update={"path": data, "eval_split": 0.0, "eval_path": None, "weights": [], "max_samples": None}
        )
        convs, _, _ = split_conversations(dcfg)
        return {"samples": prepare_splits(dcfg, tokenizer, cache).train, "conversations": convs, "source": str(data)}
    if bare:
        return {
            "samples": [],
            "conversations": [],
            "source": "none",
            "skipped": "an adapter folder without config.yaml has no eval split; pass --data FILE",
        }
    if not cfg.data.eval_path and not cfg.data.eval_split:
        return {
            "samples": [],
            "conversations": [],
            "source": "none",
            "skipped": "the run has no held-out data (data.eval_split = 0 and no data.eval_path); pass --data FILE",
        }
    where = cfg.data.eval_path or f"eval split ({cfg.data.eval_split:g}) of {cfg.data.path}"
    _, convs, _ = split_conversations(cfg.data)  # the same seeded split prepare_splits makes
    return {"samples": prepare_splits(cfg.data, tokenizer, cache).eval, "conversations": convs, "source": str(where)}


def heldout_loss(engine, held: dict, cfg, adapter: str) -> dict:
    """Token-mean loss on the held-out answers, base (adapter off) and fine-tuned, as in training."""
    from lorakit.data.template import IGNORE
    from lorakit.training.batching import pad_token_id
    from lorakit.training.loss import evaluate_loss, perplexity

    samples = held["samples"]
    if not samples:
        return {"data": held["source"], "skipped": held.get("skipped", "no held-out samples")}
    pad_id = pad_token_id(engine.tokenizer)
    # Weights are loaded in their target dtype (bf16 on GPU), so no autocast is needed here.
    args = (samples, cfg.train.batch_size, cfg.train.packing, pad_id, engine.device, contextlib.nullcontext())
    with adapter_off(engine.model):
        base = evaluate_loss(engine.model, *args)
    engine.model.set_adapter(adapter)
    tuned = evaluate_loss(engine.model, *args)
    # Labels are shifted for the loss, so a sample's first label never counts (as in batching.pack).
    n_sup = sum(sum(1 for label in s["labels"][1:] if label != IGNORE) for s in samples)
    return {
        "data": held["source"],
        "samples": len(samples),
        "supervised_tokens": n_sup,
        "base": {"loss": base, "ppl": perplexity(base)},
        "finetuned": {"loss": tuned, "ppl": perplexity(tuned)},
    }
