"""The eval's preference phase: on held-out pairs, does the tuned model prefer the chosen answers more
than the base does?

For every held-out pair (tokenized as training tokenized it), the summed log-probability of the chosen
and of the rejected answer under the base (the adapter switched off) and under the tuned model. Per
model: the share of pairs whose chosen answer is the more likely one (accuracy), and the mean margin
logp(chosen) - logp(rejected), summed and per answer token. For the tuned model also DPO's implicit
rewards with the base as the reference, beta * (logp_tuned - logp_base) per answer: their accuracy
(chosen rewarded above rejected) and mean margin, the figures DPO's training log shows.

The rest of a preference run's eval is the SFT eval's: its held-out loss is the loss on the chosen
answers of these pairs, and the side-by-side prompts are their prompts. A KTO run's held-out answers
are unpaired: lorakit.eval.unpaired scores them.
"""

from __future__ import annotations

from lorakit.data.template import IGNORE
from lorakit.models.lora import adapter_off

PREFERENCE_METHODS = ("dpo", "orpo", "simpo", "kto")
BATCH = 8  # pairs per forward: the eval runs under no_grad, padded rows (exact with any attention)


def is_preference_run(cfg) -> bool:
    return getattr(cfg.train, "method", "sft") in PREFERENCE_METHODS


def is_pairs_file(path) -> bool:
    """Whether a data file's first record is a preference pair."""
    from lorakit.data.preference import record_kind
    from lorakit.data.readers import iter_records, resolve_paths

    for item in iter_records(resolve_paths(str(path))[0]):
        if isinstance(item, tuple):
            return record_kind(item[1]) == "pair"
    return False


def heldout_pairs(cfg, tokenizer, data: str | None, bare: bool) -> dict:
    """The held-out pairs as training tokenized them ({"units", "preferences", "source"}): `data` when it
    is a pairs file, else the run's held-out split of its pairs."""
    from lorakit.data.preference import load_preferences
    from lorakit.data.preference_tokens import prepare_pairs
    from lorakit.data.prepared import _paths, _plan

    if data and is_pairs_file(data):
        dcfg = cfg.data.model_copy(
            update={"path": data, "eval_split": 0.0, "eval_path": None, "weights": [], "max_samples": None}
        )
        units = prepare_pairs(dcfg, tokenizer).train
        return {
            "units": units,
            "preferences": load_preferences(data, cfg.data.columns or None, cfg.data.system),
            "source": str(data),
        }
    if not bare and not data and getattr(cfg.train, "method", "sft") == "kto":  # unpaired: lorakit.eval.unpaired
        from lorakit.eval.unpaired import heldout_answers

        return heldout_answers(cfg, tokenizer)
    if bare or not is_preference_run(cfg) or cfg.train.method == "kto":
        return {
            "units": [],
            "preferences": [],
            "source": "none",
            "skipped": "no held-out preference pairs: pass --data PAIRS_FILE (prompt, chosen, rejected)",
        }
    if not cfg.data.eval_path and not cfg.data.eval_split:
        return {
            "units": [],
            "preferences": [],
            "source": "none",
            "skipped": "the run has no held-out pairs (data.eval_split = 0 and no data.eval_path)",
        }
    units = prepare_pairs(cfg.data, tokenizer).eval
    if cfg.data.eval_path:
        prefs, where = (
            load_preferences(cfg.data.eval_path, cfg.data.columns or None, cfg.data.system),
            cfg.data.eval_path,
        )
    else:  # the same seeded split prepare_pairs made
        every = [
            p for path in _paths(cfg.data) for p in load_preferences(path, cfg.data.columns or None, cfg.data.system)
        ]
        _, eval_at = _plan(cfg.data, [len(every)])
        prefs, where = [every[i] for i in eval_at], f"eval split ({cfg.data.eval_split:g}) of {cfg.data.path}"
    return {"units": units, "preferences": prefs, "source": str(where)}


def heldout(cfg, tokenizer, data: str | None, bare: bool, sft_heldout) -> tuple[dict, dict]:
    """(the held-out samples of the loss phase, the held-out pairs of this phase).

    With pairs (a preference run's eval split, or a --data pairs file) the loss phase scores their chosen
    answers and the side-by-side prompts are theirs; otherwise `sft_heldout()` gives the SFT held-out."""
    pairs = heldout_pairs(cfg, tokenizer, data, bare)
    if pairs["units"] and pairs.get("unpaired"):  # a KTO run: the loss on its desirable held-out answers
        from lorakit.eval.unpaired import desirable_conversations, desirable_samples

        return {
            "samples": desirable_samples(pairs["units"]),
            "conversations": desirable_conversations(pairs["preferences"]),
            "source": pairs["source"],
        }, pairs
    if pairs["units"] and (not data or is_pairs_file(data)):
        return {
            "samples": chosen_samples(pairs["units"]),
            "conversations": chosen_conversations(pairs["preferences"]),
            "source": pairs["source"],
        }, pairs
    if data or not is_preference_run(cfg):
        return sft_heldout(), pairs
    return {"samples": [], "conversations": [], "source": "none", "skipped": pairs["skipped"]}, pairs


def chosen_samples(units: list[dict]) -> list[dict]:
    """The pairs' chosen answers as SFT samples: the held-out loss of a preference run."""
    return [
        {"input_ids": u["prompt"] + u["chosen"], "labels": [IGNORE] * len(u["prompt"]) + u["chosen"]} for u in units
    ]


def chosen_conversations(preferences: list) -> list:
    """The pairs as conversations (prompt turns + the chosen answer), for the side-by-side prompts."""
    from lorakit.data.conversation import Conversation

    return [Conversation(p.prompt + p.chosen, p.source) for p in preferences]


def pair_logps(model, units: list[dict], pad_id: int, device) -> tuple[list[float], list[int]]:
    """Summed answer log-probs [c1, r1, c2, r2, ...] and answer token counts, under no_grad."""
    import torch

    from lorakit.training import batching
    from lorakit.training.loss import LossModule
    from lorakit.training.objectives.dpo import pair_batch, sequence_logps

    loss_of = LossModule(model)
    sums, counts = [], []
    with torch.no_grad():
        for i in range(0, len(units), BATCH):
            mb = batching.to_device(pair_batch(units[i : i + BATCH], False, False, pad_id), device)
            s, n = sequence_logps(loss_of(mb, "token_logprobs"), mb)
            sums += s.tolist()
            counts += [int(x) for x in n.tolist()]
    return sums, counts


def _summary(chosen: list[float], rejected: list[float], n_c: list[int], n_r: list[int]) -> dict:
    k = max(1, len(chosen))
    return {
        "accuracy": sum(c > r for c, r in zip(chosen, rejected)) / k,
        "margin": sum(c - r for c, r in zip(chosen, rejected)) / k,
        "accuracy_per_token": sum(c / a > r / b for c, r, a, b in zip(chosen, rejected, n_c, n_r)) / k,
        "margin_per_token": sum(c / a - r / b for c, r, a, b in zip(chosen, rejected, n_c, n_r)) / k,
        "logps_chosen": sum(chosen) / k,
        "logps_rejected": sum(rejected) / k,
    }


def preference_scores(engine, held: dict, cfg, adapter: str) -> dict:
    """Preference accuracy and margins of the base and of the tuned model on the held-out pairs."""
    from lorakit.training.batching import pad_token_id

    units = held["units"]
    if not units:
        return {"data": held["source"], "skipped": held.get("skipped", "no held-out pairs")}
    if held.get("unpaired"):
        from lorakit.eval.unpaired import unpaired_scores

        return unpaired_scores(engine, held, _beta(cfg), adapter)
    pad_id = pad_token_id(engine.tokenizer)
    with adapter_off(engine.model):
        base, counts = pair_logps(engine.model, units, pad_id, engine.device)
    engine.model.set_adapter(adapter)
    tuned, _ = pair_logps(engine.model, units, pad_id, engine.device)
    n_c, n_r = counts[0::2], counts[1::2]
    beta = _beta(cfg)
    r_c = [beta * (t - b) for t, b in zip(tuned[0::2], base[0::2])]
    r_r = [beta * (t - b) for t, b in zip(tuned[1::2], base[1::2])]
    k = len(units)
    return {
        "data": held["source"],
        "pairs": k,
        "beta": beta,
        "base": _summary(base[0::2], base[1::2], n_c, n_r),
        "finetuned": _summary(tuned[0::2], tuned[1::2], n_c, n_r),
        "rewards": {
            "accuracy": sum(c > r for c, r in zip(r_c, r_r)) / k,
            "margin": sum(c - r for c, r in zip(r_c, r_r)) / k,
            "chosen": sum(r_c) / k,
            "rejected": sum(r_r) / k,
        },
    }


def _beta(cfg) -> float:
    """The run's beta (DPO's, or its method's); 0.1, DPO's default, for a run without one."""
    t = cfg.train
    method = getattr(t, "method", "sft")
    return float(
        getattr(t, {"orpo": "orpo_beta", "simpo": "simpo_beta", "kto": "kto_beta"}.get(method, "dpo_beta"), 0.1)
    )
