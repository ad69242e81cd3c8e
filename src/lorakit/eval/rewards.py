"""The eval's reward phase for a GRPO run: held-out prompts answered by the base (the adapter switched
off) and by the tuned model, scored by the run's own reward functions.

Per model:
- greedy: one completion per prompt. The mean total reward, each function's mean and share at its full
  score, and accuracy: the share of prompts whose completion is right (`solved`), that is, at full
  score from every answer check that scores it (functions marked `checks_answer`, e.g. the built-in
  `numeric_answer`; every function when none is marked).
- sampled: k = `num_generations` completions per prompt with the run's temperature, top_p and top_k,
  every completion seeded from one seed (the same seeds for both models). pass@k is the share of
  prompts with at least one solved completion among its k; also the mean total reward of the samples.

A function's full score is its `full_score` attribute (the built-ins and the tutorial's functions set
it); a user function without one counts as full at the highest value it gave in this eval (both models,
greedy and sampled), and eval.json says so.

Generation and scoring are the training run's own: the rollout of `training/rollout.py` (the engine's
batched decoding with per-completion seeds), the objective's data preparation and reward loading, and
`grpo_step.score_completions`. So the tuned model's greedy figures are what the trainer logged as
`eval_reward` on the same split at its last step.
"""

from __future__ import annotations

import contextlib
import math

from lorakit.models.lora import adapter_off

GRPO_METHOD = "grpo"
ITEMS = 8  # prompts whose greedy completions (both models, with their rewards) go into eval.json


def is_grpo_run(cfg) -> bool:
    return getattr(cfg.train, "method", "sft") == GRPO_METHOD


def heldout_prompts(cfg, tokenizer, data: str | None, bare: bool) -> dict:
    """The held-out prompt records ({"records", "source"}; "skipped" when there are none), tokenized
    as training tokenized them: `data` when given, else the run's held-out split."""
    from lorakit.training.objectives.grpo import GRPO

    if bare or not is_grpo_run(cfg):
        return {"records": [], "source": "none", "skipped": "not a GRPO run (train.method grpo)"}
    if data:
        dcfg = cfg.data.model_copy(update={"path": data, "eval_path": data, "max_samples": None, "dedup": False})
        where = str(data)
    elif cfg.data.eval_path or cfg.data.eval_split:
        dcfg = cfg.data
        where = str(cfg.data.eval_path or f"eval split ({cfg.data.eval_split:g}) of {cfg.data.path}")
    else:
        return {
            "records": [],
            "source": "none",
            "skipped": "the run has no held-out prompts (data.eval_split = 0 and no data.eval_path); pass --data FILE",
        }
    return {"records": list(GRPO(cfg).prepare(dcfg, tokenizer, None).eval), "source": where}


def reward_scores(engine, held: dict, cfg, adapter: str, seed: int) -> dict:
    """Greedy and pass@k figures of the base and the tuned model on the held-out prompts."""
    from lorakit.training import grpo_step as S
    from lorakit.training.rewards import load_rewards
    from lorakit.training.rollout import Rollout, RolloutSettings

    records = held["records"]
    if not records:
        return {"data": held["source"], "skipped": held.get("skipped", "no held-out prompts")}
    t = cfg.train
    rewards = load_rewards(t.rewards)
    k = t.num_generations
    greedy_settings = RolloutSettings(1, t.max_completion_length, 0.0)
    sampled_settings = RolloutSettings(k, t.max_completion_length, t.temperature, t.top_p, t.top_k)
    ids = [r["prompt_ids"] for r in records]
    got = {}
    for side, name in (("base", None), ("finetuned", adapter)):
        with _adapter(engine.model, name):
            greedy = Rollout(engine.model, engine.tokenizer, greedy_settings, seed=seed).generate(ids)
            sampled = Rollout(engine.model, engine.tokenizer, sampled_settings, seed=seed).generate(ids)
        got[side] = {
            "greedy": (greedy, S.score_completions(greedy, records, rewards, S.GRPOSettings(num_generations=1))[0]),
            "sampled": (sampled, S.score_completions(sampled, records, rewards, S.GRPOSettings(num_generations=k))[0]),
        }
    tables = [scores.per_function for side in got.values() for _, scores in side.values()]
    full, observed = full_scores(rewards, tables)
    checks = answer_checks(rewards)
    result = {
        "data": held["source"],
        "prompts": len(records),
        "k": k,
        "rewards": [
            {
                "name": r.name,
                "weight": r.weight,
                "full_score": f,
                "full_score_source": "observed" if o else "function",
                "checks_answer": j in checks,
            }
            for j, (r, f, o) in enumerate(zip(rewards, full, observed))
        ],
        "sampling": {
            "temperature": t.temperature,
            "top_p": t.top_p,
            "top_k": t.top_k,
            "seed": seed,
            "max_completion_length": t.max_completion_length,
        },
    }
    for side, runs in got.items():
        result[side] = {
            "greedy": greedy_summary(runs["greedy"][1], full, checks),
            "sampled": sampled_summary(runs["sampled"][1], full, k, checks),
        }
    result["items"] = _items(records, got, full, checks)
    return result


def full_scores(rewards, tables: list) -> tuple[list[float], list[bool]]:
    """Each function's full score, and whether it was observed (the highest value it gave in `tables`,
    [completions, functions] with NaN where it did not apply) rather than declared by the function."""
    import torch

    full, observed = [], []
    for j, reward in enumerate(rewards):
        declared = getattr(reward.function, "full_score", None)
        if declared is not None:
            full.append(float(declared))
            observed.append(False)
            continue
        values = torch.cat([t[:, j] for t in tables])
        values = values[~values.isnan()]
        full.append(float(values.max()) if values.numel() else math.nan)
        observed.append(True)
    return full, observed


def answer_checks(rewards) -> list[int]:
    """Indices of the functions that check the answer (`checks_answer`); all of them when none says so."""
    marked = [j for j, r in enumerate(rewards) if getattr(r.function, "checks_answer", False)]
    return marked or list(range(len(rewards)))


def solved(per_function, full: list[float], checks: list[int]):
    """Per completion: every answer check (`checks`, column indices) that scored it gave its full score,
    and at least one scored it (None, "does not apply", neither passes nor fails)."""
    import torch

    per_function, full = per_function[:, checks], [full[j] for j in checks]
    scored = ~per_function.isnan()
    at_full = per_function >= torch.tensor(full, dtype=per_function.dtype) - 1e-6
    return (at_full | ~scored).all(dim=1) & scored.any(dim=1)


def greedy_summary(scores, full: list[float], checks: list[int]) -> dict:
    """Mean total reward, accuracy (share solved), and each function's mean and share at full score."""
    ok = solved(scores.per_function, full, checks)
    return {
        "reward": _mean(scores.total),
        "accuracy": float(ok.float().mean()),
        "solved": int(ok.sum()),
        "per_function": _per_function(scores, full),
    }


def sampled_summary(scores, full: list[float], k: int, checks: list[int]) -> dict:
    """pass@k (a prompt passes when any of its k completions is solved), the share of solved samples and
    the mean total reward; completions of prompt i are at i*k ... i*k + k - 1."""
    ok = solved(scores.per_function, full, checks).view(-1, k)
    return {
        "pass_at_k": float(ok.any(dim=1).float().mean()),
        "passed": int(ok.any(dim=1).sum()),
        "sample_accuracy": float(ok.float().mean()),
        "reward": _mean(scores.total),
        "per_function": _per_function(scores, full),
    }


def _per_function(scores, full: list[float]) -> dict:
    out = {}
    for j, name in enumerate(scores.names):
        column = scores.per_function[:, j]
        applied = column[~column.isnan()]
        out[name] = {
            "mean": _mean(column),
            "at_full": float((applied >= full[j] - 1e-6).float().mean()) if applied.numel() else None,
        }
    return out


def _items(records: list[dict], got: dict, full: list[float], checks: list[int]) -> list[dict]:
    """The first prompts' greedy completions of both models, with each reward, for the report."""
    out = []
    for i, record in enumerate(records[:ITEMS]):
        prompt = record["prompt"]
        item = {"prompt": prompt[-1]["content"] if isinstance(prompt, list) else prompt}
        for side, runs in got.items():
            completions, scores = runs["greedy"]
            item[side] = {
                "completion": completions[i].text,
                "reward": _value(scores.total[i]),
                "solved": bool(solved(scores.per_function[i : i + 1], full, checks)[0]),
                "rewards": {n: _value(scores.per_function[i, j]) for j, n in enumerate(scores.names)},
            }
        out.append(item)
    return out


@contextlib.contextmanager
def _adapter(model, name: str | None):
    """The base (adapter off) for None, else the named adapter on."""
    if name is None:
        with adapter_off(model):
            yield
    else:
        model.set_adapter(name)
        yield


def _mean(x) -> float | None:
    x = x[~x.isnan()]
    return float(x.mean()) if x.numel() else None


def _value(x) -> float | None:
    return None if x.isnan() else float(x)


def as_heldout(held: dict) -> dict:
    """The held-out phase's view of a GRPO run: no samples to take a loss on (prompts have no reference
    answers to score, the rewards do that), and the prompts as conversations for the side-by-side
    answers, the `answer` column (when there is one) as their reference."""
    from lorakit.data.conversation import Conversation, Message

    conversations = [
        Conversation(
            [Message(m["role"], m["content"]) for m in r["prompt"]]
            + [Message("assistant", "" if r.get("answer") is None else str(r["answer"]))],
            "",
        )
        for r in held["records"]
        if isinstance(r["prompt"], list)
    ]
    return {
        "samples": [],
        "conversations": conversations,
        "source": held["source"],
        "skipped": "a GRPO run: its prompts have no reference answers to take a loss on; "
        "the run's reward functions score them instead (held-out rewards)",
    }
