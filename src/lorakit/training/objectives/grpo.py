"""GRPO (Shao et al., 2024, DeepSeekMath) with verifiable rewards, as trl.GRPOTrainer 1.16 computes it.

A unit is a prompt record ({"prompt": messages, "prompt_ids", **columns}; lorakit.data.prompts). Before
each step's forwards, `rollout` samples `num_generations` completions per prompt from the model being
trained (its current adapter, lorakit's own generation core: training/rollout.py), scores them with the
reward functions (training/rewards.py) and turns the rewards into group advantages. The step then trains
on the completions: `train.batch_size` prompts' completions per forward, packed with the prompt stored
once per group; the loss is TRL's clipped surrogate plus beta * KL to the base (the adapter switched
off: no second model), normalised by `train.loss_type` (training/grpo_loss.py).

With `num_iterations` > 1 a generation batch serves that many optimizer steps (TRL's mu): the policy's
log-probs at rollout time are kept as the "old" policy, and the prompts the loop hands the objective on
the steps in between are not used (as TRL, a run of N steps sees N / mu prompt batches).

Exact resume: the sampling generator and a generation batch still in use are the objective's state.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
from typing import Sequence

import torch

from lorakit.errors import LorakitError
from lorakit.models.lora import adapter_off
from lorakit.training import batching
from lorakit.training import grpo_step as S
from lorakit.training.objectives.base import Objective, StepLoss
from lorakit.training.rewards import load_rewards
from lorakit.training.rollout import Rollout, RolloutSettings
from lorakit.training.tracking import COMPLETIONS_FILE  # the tracker forwards its tables to the backends

IN_PROCESS = "lorakit"  # the sampler's name in the checkpoint: lorakit's own, as its server's owned_by says


def settings_of(t) -> S.GRPOSettings:
    return S.GRPOSettings(
        num_generations=t.num_generations,
        max_completion_length=t.max_completion_length,
        temperature=t.temperature,
        beta=t.beta,
        epsilon=t.epsilon,
        epsilon_high=t.epsilon_high,
        num_iterations=t.num_iterations,
        loss_type=t.loss_type,
        scale_rewards=t.scale_rewards,
        mask_truncated_completions=t.mask_truncated_completions,
        kl_ratio_correction=t.kl_ratio_correction,
    )


class GRPO(Objective):
    name = "grpo"
    data_kind = "prompts"
    unit = "prompts"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.settings = settings_of(cfg.train)
        self.rewards = load_rewards(cfg.train.rewards)
        self.sampler: Rollout | None = None
        self.greedy: Rollout | None = None
        self.batch: list[dict] | None = None  # the generation batch in use (completion units)
        self.batch_metrics: dict[str, float] = {}
        self._rng_state: str | None = None
        self._engine: str | None = None  # which sampler drew the completions so far (a checkpoint's record)
        self._step = {"completions": 0, "tokens": 0, "denominator": 1}

    # -- data -------------------------------------------------------------------------------------------
    def prepare(self, data_cfg, tokenizer, cache_dir):
        from lorakit.data.prepared import PreparedData
        from lorakit.data.prompts import load_prompt_records

        records = load_prompt_records(data_cfg.path, data_cfg.columns, data_cfg.system)
        read = len(records)
        if data_cfg.dedup:
            seen: set[str] = set()
            keys = [json.dumps(r, sort_keys=True, ensure_ascii=False, default=str) for r in records]
            records = [r for r, k in zip(records, keys) if not (k in seen or seen.add(k))]
        dropped = read - len(records)
        if data_cfg.max_samples:
            records = records[: data_cfg.max_samples]
        if data_cfg.eval_path:
            held_out = load_prompt_records(data_cfg.eval_path, data_cfg.columns, data_cfg.system)
        else:
            order = list(range(len(records)))
            random.Random(data_cfg.seed).shuffle(order)
            n = int(data_cfg.eval_split) if data_cfg.eval_split >= 1 else round(data_cfg.eval_split * len(records))
            held_out, records = [records[i] for i in order[:n]], [records[i] for i in sorted(order[n:])]
        thinking = {"on": True, "off": False}.get(data_cfg.thinking)
        for r in records + held_out:
            r["prompt_ids"] = _chat_ids(tokenizer, r["prompt"], thinking)
        key = hashlib.sha256(json.dumps([r["prompt_ids"] for r in records + held_out]).encode()).hexdigest()
        stats = {
            "records": read,
            "duplicates_dropped": dropped,
            "train_samples": len(records),
            "eval_samples": len(held_out),
            "cache_key": key,
        }
        return PreparedData(records, held_out, stats)

    def unit_tokens(self, unit: dict) -> int:
        return self.settings.num_generations * (len(unit["prompt_ids"]) + self.settings.max_completion_length)

    def unit_supervised(self, unit: dict) -> int:
        return self.settings.num_generations * self.settings.max_completion_length

    # -- a step ----------------------------------------------------------------------------------------
    def begin_run(self, setup) -> None:
        t = self.cfg.train
        sampling = RolloutSettings(t.num_generations, t.max_completion_length, t.temperature, t.top_p, t.top_k)
        tokenizer = setup.inputs.tokenizer
        self.sampler = Rollout(setup.model, tokenizer, sampling, seed=t.seed)
        self.greedy = Rollout(setup.model, tokenizer, RolloutSettings(1, t.max_completion_length, 0.0), seed=0)
        engine = IN_PROCESS
        if t.generation_server:  # the same interface; the adapter goes to the server each step
            from lorakit.training.rollout_server import server_rollouts

            self.sampler, self.greedy, engine = server_rollouts(setup, self.sampler, self.greedy, t.generation_server)
        self._check_engine(engine, setup.state.resumes)
        if self._rng_state is not None:
            self.sampler.rng.set_state(_decode_state(self._rng_state))
        self.setup = setup

    def _check_engine(self, engine: str, resumes: list[dict]) -> None:
        """The same seeds give the same tokens only from the same sampler: lorakit's (in this process or
        its server) or vLLM's. A resume that switches between them changes the maths from here on, so it
        is refused as a changed setting is (train.generation_server's address itself may change)."""
        before = self._engine
        if before is None or before == engine:
            self._engine = engine
            return
        change = f"the completions were sampled by {before}, now by {engine} (train.generation_server)"
        if not (resumes and resumes[-1].get("resume_anyway")):
            raise LorakitError(
                f"--resume would change how the run trains: {change}; the same seeds give other tokens from "
                "another engine; use a server of the same engine, start a new run, or pass --resume-anyway"
            )
        print(f"resuming anyway although {change}")
        resumes[-1]["changed"] = list(resumes[-1].get("changed") or []) + [change]
        self._engine = engine

    def rollout(self, setup, units: list[dict]) -> list[dict]:
        step = setup.state.step + 1  # the step about to run
        if self.batch is not None and (step - 1) % self.settings.num_iterations:
            return self.batch  # a later iteration over the same generation batch
        self.batch = self._generate(setup, units, step)
        return self.batch

    def micro_batches(self, units: Sequence[dict], pad_id: int, budget, world: int) -> list[dict]:
        t = self.cfg.train
        per_forward = t.batch_size * self.settings.num_generations
        return [
            S.pack_completions(list(units[i : i + per_forward]), t.packing, t.share_prefix, pad_id)
            for i in range(0, len(units), per_forward)
        ]

    def begin_step(self, micro: list[dict]) -> int:
        completions = sum(mb["n_samples"] for mb in micro)
        tokens = sum(mb["completion_tokens"] for mb in micro)
        denominator = S.step_denominator(self.settings, completions, tokens, len(micro))
        self._step = {
            "completions": completions,
            "tokens": max(1, tokens),
            "denominator": max(1, denominator),
            "first": True,
        }
        return denominator

    def loss(self, loss_of, batch: dict) -> StepLoss:
        summed, sums = S.micro_loss(self._logprobs(loss_of, batch), batch, self.settings)
        # The loop divides metric sums by the step's denominator: token sums are scaled so that gives
        # the step's token mean, and the rollout's figures ride on the step's first micro-batch.
        d, per_token = self._step["denominator"], self._step["denominator"] / self._step["tokens"]
        metrics = {k: torch.tensor(v * per_token) for k, v in sums.items()}
        if self._step.pop("first", False):
            metrics.update({k: torch.tensor(v * d) for k, v in self.batch_metrics.items()})
        return StepLoss(summed, metrics)

    def _logprobs(self, loss_of, batch: dict) -> torch.Tensor:
        if self.settings.temperature == 1.0:
            return loss_of(batch, "token_logprobs")  # the fused head: no full-vocabulary logits
        return S.completion_logprobs(loss_of.model, batch, self.settings.temperature)

    def _generate(self, setup, units: list[dict], step: int) -> list[dict]:
        from tqdm import tqdm

        start = time.perf_counter()
        total = len(units) * self.settings.num_generations
        with tqdm(
            total=total,
            desc="generate",
            unit="completion",
            leave=False,
            disable=setup.dist.rank != 0,
            dynamic_ncols=True,
        ) as bar:
            completions = self.sampler.generate(
                [u["prompt_ids"] for u in units], progress=lambda done, _: bar.update(done - bar.n)
            )
        generation_s = time.perf_counter() - start
        scores, advantages, metrics = S.score_completions(completions, units, self.rewards, self.settings)
        batch = S.completion_units(completions, advantages, self.settings.mask_truncated_completions)
        per_forward = self.cfg.train.batch_size * self.settings.num_generations
        t = self.cfg.train

        def pack(part: list[dict]) -> dict:
            return batching.to_device(S.pack_completions(part, t.packing, t.share_prefix, setup.pad_id), setup.device)

        with setup.autocast:
            if self.settings.num_iterations > 1:
                S.attach_fixed_logprobs(
                    batch, lambda b: self._logprobs(setup.loss_of, b), "old_logps", per_forward, pack
                )
            if self.settings.beta:
                S.attach_fixed_logprobs(
                    batch, lambda b: self._reference(setup.loss_of, b), "ref_logps", per_forward, pack
                )
        self.batch_metrics = {
            **metrics,
            "time/generation_s": generation_s,
            "time/scoring_s": time.perf_counter() - start - generation_s,
        }
        every = self.cfg.train.log_completions_steps or self.cfg.train.logging_steps
        serves = range(step, step + self.settings.num_iterations)  # the steps this batch trains
        if any(k % every == 0 for k in serves) and setup.dist.rank == 0:
            with open(setup.run_dir / COMPLETIONS_FILE, "a", encoding="utf-8") as f:
                f.write(
                    json.dumps(
                        {"step": step, "completions": S.completion_table(completions, units, scores)},
                        ensure_ascii=False,
                    )
                    + "\n"
                )
        return batch

    def _reference(self, loss_of, batch: dict) -> torch.Tensor:
        with adapter_off(loss_of.model):
            return self._logprobs(loss_of, batch)

    # -- held-out --------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, loss_of, units, pad_id, device, autocast, budget) -> dict:
        """Greedy completions of the held-out prompts, scored by the training rewards: eval_loss is minus
        the mean total reward (so the best checkpoint is the most rewarded one)."""
        completions = self.greedy.generate([u["prompt_ids"] for u in units])
        greedy = S.GRPOSettings(num_generations=1, scale_rewards="none")
        scores, _, metrics = S.score_completions(completions, list(units), self.rewards, greedy)
        figures = {f"eval_{k}": v for k, v in metrics.items() if k != "frac_reward_zero_std"}
        return {"eval_loss": -metrics["reward"], **figures}

    # -- exact resume ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {"rng": _encode_state(self.sampler.rng.get_state()) if self.sampler else self._rng_state}
        state["engine"] = self._engine or IN_PROCESS
        if self.settings.num_iterations > 1 and self.batch is not None:
            state["batch"], state["batch_metrics"] = self.batch, self.batch_metrics
        return state

    def load_state_dict(self, state: dict) -> None:
        self._rng_state = state.get("rng")
        # a checkpoint from before servers existed was sampled in process
        self._engine = state.get("engine", IN_PROCESS) if state else None
        self.batch = state.get("batch")
        self.batch_metrics = state.get("batch_metrics", {})
        if self.sampler is not None and self._rng_state is not None:
            self.sampler.rng.set_state(_decode_state(self._rng_state))


def _chat_ids(tokenizer, messages: list[dict], thinking: bool | None) -> list[int]:
    """The prompt as the engine renders it (Engine.chat_prompt): template text with the generation
    prompt, encoded without adding special tokens again."""
    kwargs = {} if thinking is None else {"enable_thinking": thinking}
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kwargs)
    return tokenizer.encode(text, add_special_tokens=False)


def _encode_state(state: torch.Tensor) -> str:
    return base64.b64encode(bytes(state.tolist())).decode("ascii")


def _decode_state(text: str) -> torch.Tensor:
    return torch.tensor(list(base64.b64decode(text)), dtype=torch.uint8)
