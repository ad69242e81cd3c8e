"""The eval's preference phase for a KTO run: held-out answers labelled desirable or undesirable, one by
one, with no pairs to compare within.

What is measured is KTO's own view of an answer, its implied reward r = beta * (logp_tuned - logp_base),
the summed answer log-probability under the tuned model minus under the base (the adapter switched off:
KTO's reference). The base scores every answer 0 by definition, so the figures are the tuned model's:
  accuracy      the share of (desirable, undesirable) combinations of held-out answers in which the
                desirable one gets the higher reward (0.5 = no separation; ties count half);
  sign_accuracy the share of answers on their side of 0: desirable raised (r > 0), undesirable lowered;
  margin        mean reward of the desirable answers minus that of the undesirable ones.
The reward, not the raw log-probability, is compared across answers: answers to different prompts have
log-probabilities on different scales, and subtracting the base's removes that. Mean log-probs of
both kinds are reported for base and tuned as well.

The held-out loss of a KTO run is the loss on its desirable held-out answers; their prompts are the
side-by-side prompts.
"""

from __future__ import annotations

from lorakit.data.template import IGNORE
from lorakit.models.lora import adapter_off

BATCH = 8  # answers per forward, padded rows under no_grad


def heldout_answers(cfg, tokenizer) -> dict:
    """The run's held-out answers as training tokenized them ({"units", "preferences", "source"})."""
    from lorakit.training.objectives.kto_data import load_unpaired, prepare_unpaired

    if not cfg.data.eval_path and not cfg.data.eval_split:
        return {
            "units": [],
            "preferences": [],
            "source": "none",
            "skipped": "the run has no held-out answers (data.eval_split = 0 and no data.eval_path)",
        }
    units = prepare_unpaired(cfg.data, tokenizer).eval
    if cfg.data.eval_path:
        items, where = load_unpaired(cfg.data.eval_path, cfg.data.columns or None, cfg.data.system), cfg.data.eval_path
    else:  # the same seeded split prepare_unpaired made
        from lorakit.data.preference_tokens import read_unique
        from lorakit.data.prepared import _plan
        from lorakit.training.objectives.kto_data import _key

        every, counts, _ = read_unique(cfg.data, load_unpaired, _key)
        _, eval_at = _plan(cfg.data, counts)
        items, where = [every[i] for i in eval_at], f"eval split ({cfg.data.eval_split:g}) of {cfg.data.path}"
    return {"units": units, "preferences": items, "source": str(where), "unpaired": True}


def desirable_samples(units: list[dict]) -> list[dict]:
    """The desirable answers as SFT samples: the held-out loss of a KTO run."""
    return [
        {"input_ids": u["prompt"] + u["completion"], "labels": [IGNORE] * len(u["prompt"]) + u["completion"]}
        for u in units
        if u["label"]
    ]


def desirable_conversations(items: list) -> list:
    from lorakit.data.conversation import Conversation

    return [Conversation(i.prompt + i.completion, i.source) for i in items if i.label]


def answer_logps(model, units: list[dict], pad_id: int, device) -> tuple[list[float], list[int]]:
    """Summed answer log-probs and answer token counts, one per unit, under no_grad."""
    import torch

    from lorakit.training import batching
    from lorakit.training.loss import LossModule
    from lorakit.training.objectives.kto import sequence_sums

    loss_of = LossModule(model)
    sums: list[float] = []
    with torch.no_grad():
        for i in range(0, len(units), BATCH):
            group = units[i : i + BATCH]
            samples = desirable_samples([{**u, "label": True} for u in group])
            mb = batching.to_device(batching.pad(samples, pad_id), device)
            sums += sequence_sums(loss_of, mb, len(group)).tolist()
    return sums, [len(u["completion"]) for u in units]


def _means(logps: list[float], counts: list[int], labels: list[bool]) -> dict:
    out = {}
    for name, want in (("desirable", True), ("undesirable", False)):
        idx = [i for i, x in enumerate(labels) if x == want]
        k = max(1, len(idx))
        out[f"logps_{name}"] = sum(logps[i] for i in idx) / k
        out[f"logps_{name}_per_token"] = sum(logps[i] / max(1, counts[i]) for i in idx) / k
    return out


def reward_summary(rewards: list[float], labels: list[bool]) -> dict:
    good = [r for r, x in zip(rewards, labels) if x]
    bad = [r for r, x in zip(rewards, labels) if not x]
    combos = len(good) * len(bad)
    above = sum(1.0 if g > b else 0.5 if g == b else 0.0 for g in good for b in bad)
    right = sum(r > 0 for r in good) + sum(r < 0 for r in bad)
    return {
        "accuracy": above / combos if combos else None,
        "sign_accuracy": right / max(1, len(rewards)),
        "desirable": sum(good) / max(1, len(good)),
        "undesirable": sum(bad) / max(1, len(bad)),
        "margin": sum(good) / max(1, len(good)) - sum(bad) / max(1, len(bad)),
    }


def unpaired_scores(engine, held: dict, beta: float, adapter: str) -> dict:
    """Implied-reward accuracy and margin of the tuned model, log-probs of base and tuned, on the held-out
    answers of a KTO run."""
    from lorakit.training.batching import pad_token_id

    units = held["units"]
    pad_id = pad_token_id(engine.tokenizer)
    with adapter_off(engine.model):
        base, counts = answer_logps(engine.model, units, pad_id, engine.device)
    engine.model.set_adapter(adapter)
    tuned, _ = answer_logps(engine.model, units, pad_id, engine.device)
    labels = [bool(u["label"]) for u in units]
    return {
        "data": held["source"],
        "answers": len(units),
        "desirable": sum(labels),
        "undesirable": len(labels) - sum(labels),
        "beta": beta,
        "base": _means(base, counts, labels),
        "finetuned": _means(tuned, counts, labels),
        "rewards": reward_summary([beta * (t - b) for t, b in zip(tuned, base)], labels),
    }
