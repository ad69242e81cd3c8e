"""The training stage: one loop for every objective (train.method: SFT, DPO, ...), with packing,
checkpoints, exact resume and tracking. What differs between methods (how a step's units become
forwards, the loss, its metrics, the held-out figures) is asked of the objective
(lorakit.training.objectives); nothing here is method-specific.

`train()` reads top to bottom: `setup()` (device, data, model, optimizer) -> `run_steps()` (the optimizer
steps, with eval, logging and checkpoints at their intervals) -> `finish()` (final adapter, run.json,
plots). The run's moving parts live on one `Setup`; what a checkpoint restores is a `TrainState`.
Everything a later stage needs lands in train.output_dir.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from lorakit.atomic import atomic_dir, write_json, write_text
from lorakit.config import RunConfig, config_to_yaml
from lorakit.data.prepared import account_line
from lorakit.models import precision
from lorakit.rundir import claim_run_dir
from lorakit.training import batching, checkpoint, fastpaths, fused, guards
from lorakit.training import resume as resume_rules
from lorakit.training.distributed import Distributed, LossModule, pick_device
from lorakit.training.objectives import objective_for
from lorakit.training.objectives.base import Objective
from lorakit.training.plan import Inputs, Plan, pack_budget, plan_run, resolve_inputs, use_checkpointing


@dataclass
class TrainState:
    """What a checkpoint's state.json holds and --resume restores: the step and the best eval so far."""

    step: int = 0
    best_eval_loss: float | None = None
    best_step: int | None = None
    best_checkpoint: str | None = None
    evals_without_improvement: int = 0
    trained_with: dict | None = None  # config, data hash, base model identity (training/resume.py)
    resumes: list = field(default_factory=list)  # every resume of this run, written to run.json
    objective: dict = field(default_factory=dict)  # the objective's own state (objectives/base.py)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainState":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def as_dict(self) -> dict:
        return asdict(self)

    def track_best(self, eval_loss: float, run_dir: Path) -> bool:
        """Record an eval at self.step; True if it is the best so far (its checkpoint is then kept)."""
        if self.best_eval_loss is None or eval_loss < self.best_eval_loss:
            self.best_eval_loss, self.best_step, self.evals_without_improvement = eval_loss, self.step, 0
            self.best_checkpoint = str(run_dir / "checkpoints" / f"checkpoint-{self.step}")
            return True
        self.evals_without_improvement += 1
        return False


@dataclass
class Window:
    """Loss, metric and token sums since the last logged step; `denominator` is what the objective divides
    a step's sums by (SFT: supervised tokens, DPO: pairs)."""

    loss: float = 0.0
    denominator: int = 0
    tokens: int = 0
    metrics: dict = field(default_factory=dict)
    t0: float = field(default_factory=time.perf_counter)


@dataclass
class Setup:
    """One run's parts, built by `setup()` and used by every step."""

    cfg: RunConfig
    dist: Distributed
    inputs: Inputs
    run_dir: Path
    model: Any  # the PEFT model
    loss_of: LossModule  # the model and the loss as one forward (FSDP's root when sharded)
    params: list
    optimizer: torch.optim.Optimizer
    scheduler: Any
    autocast: Any
    budget: batching.TokenBudget | None
    pad_id: int
    state: TrainState
    start_step: int
    last_good: str | None = None  # the newest checkpoint this run resumed from or saved
    paths: fastpaths.Paths | None = None  # the attention and fused forwards this run takes
    objective: Objective | None = None  # train.method: the batch layout, the loss and its metrics

    @property
    def data(self):
        return self.inputs.data

    @property
    def device(self) -> str:
        return self.inputs.device

    @property
    def n_steps(self) -> int:
        return self.inputs.n_steps


def train(
    cfg: RunConfig,
    resume: str | None = None,
    dry_run: bool = False,
    overwrite: bool = False,
    resume_anyway: bool = False,
    on_setup: Callable[[Setup], None] | None = None,
) -> Path:
    """Run (or plan, with dry_run) one training run described by `cfg`; returns the run directory.
    `on_setup` sees the built `Setup` (model with its adapter, optimizer) before the first step, e.g. to
    hook a profiler onto the model."""
    if dry_run:
        print_plan(cfg)
        return Path(cfg.train.output_dir)
    # one writer per run folder, from before anything in it is read or deleted until the run ends
    lock = claim_run_dir(cfg.train.output_dir, resume, overwrite) if Distributed.from_env().rank == 0 else None
    try:
        s = setup(cfg, resume, overwrite, resume_anyway)
        s.objective.begin_run(s)
        if on_setup is not None:
            on_setup(s)
        run_steps(s)
        finish(s)
    finally:
        if lock:
            lock.release()
    return s.run_dir


def print_plan(cfg: RunConfig) -> Plan:
    """--dry-run: print the config and the plan (data, steps, memory); returns the plan."""
    dist = Distributed.from_env()
    plan = plan_run(cfg, dist)
    for note in plan.notes:
        dist.print(note)
    print(config_to_yaml(cfg))
    print("\n".join(plan.lines()))
    return plan


def setup(cfg: RunConfig, resume: str | None = None, overwrite: bool = False, resume_anyway: bool = False) -> Setup:
    """Tokenize the data, load the model with its adapter, build the optimizer, and restore a checkpoint for
    `resume` (refused if it changes training, unless `resume_anyway`); writes config.yaml into the run
    folder, whose lock the caller holds (`train` takes it)."""
    from lorakit.models import load_model
    from lorakit.models.lora import attach_lora, trainable_parameters

    dist = Distributed.from_env()
    device = pick_device(cfg.train.device, dist)
    torch.set_num_threads(cfg.train.threads or max(1, (os.cpu_count() or 1) // dist.local_world))
    run_dir = Path(cfg.train.output_dir)
    if dist.rank == 0:
        checkpoint.remove_stale(run_dir)  # temp folders of saves that were killed; the caller holds the lock
    inputs = resolve_inputs(cfg, dist, device, replay=True)
    dist.print(account_line(inputs.data.stats, cfg.data))  # as `lorakit data prepare` accounts for it
    if inputs.dtype_note:
        dist.print(inputs.dtype_note)
    # before loading the model: a resume that changes the mathematics is refused here
    now = resume_rules.trained_with(cfg, inputs.data.stats.get("cache_key"), inputs.model_path)
    ckpt = checkpoint.find_resume_point(run_dir, resume, dist.print) if resume else None
    resumes = resume_rules.resume_history(ckpt, now, resume_anyway, dist.print) if ckpt else []

    t = cfg.train
    _seed_everything(t.seed)
    model = load_model(inputs.model_path, dtype=inputs.weight_dtype, device=device, quantize=cfg.model.quantize)
    if cfg.model.quantize != "none" and inputs.weight_dtype == "float16":
        # fp16 needs the norms and embeddings upcast to train stably; in bf16 that upcast would only add
        # 4 bytes per embedding weight (1.6 GB on Qwen3-4B) to a base quantised to save memory
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = attach_lora(model, cfg.lora)
    # fast paths by the config and what the model computes, else transformers' own; chosen once, here
    chosen = fastpaths.choose(model, t.packing, t.attention, t.packed_attention)
    frozen = fastpaths.apply(model, chosen, inputs.use_fused)
    dist.print(chosen.line())
    run_cfg = cfg  # as the steps run it: transformers' attention takes padded batches (fastpaths.py says why)
    if t.packing and not chosen.packing:
        t = t.model_copy(update={"packing": False, "share_prefix": False})
        run_cfg = cfg.model_copy(update={"train": t})
    if inputs.upcast:
        precision.upcast_except(model, frozen)
    checkpointing = use_checkpointing(t.gradient_checkpointing, device)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    objective = objective_for(run_cfg)
    budget = pack_budget(t, device, inputs.model_path, inputs.weight_dtype, checkpointing, objective.rows_per_unit)
    if budget:
        dist.print(
            f"packing up to {budget.tokens:,} tokens per forward (train.pack_tokens)"
            if budget.fill
            else f"{t.batch_size} {objective.unit} per forward, split where over {budget.tokens:,} tokens "
            "(train.pack_tokens)"
        )
    model.train()
    loss_of = dist.shard(model, t.fsdp, device, t.neftune_alpha or 0.0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(t.lr_scheduler, inputs.n_steps, t.warmup_ratio))

    state = TrainState()
    if ckpt:
        state = TrainState.from_dict(checkpoint.load_checkpoint(ckpt, model, optimizer, scheduler, sharded=dist.fsdp))
        dist.print(f"resuming from {ckpt} (step {state.step})")
    state.trained_with, state.resumes = now, resumes
    objective.load_state_dict(state.objective)
    if dist.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "config.yaml", config_to_yaml(cfg))
    trainable, total = trainable_parameters(model)
    dist.print(
        f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.3f}%); "
        f"{len(inputs.data.train)} {objective.unit}, {inputs.n_steps} steps"
    )
    return Setup(
        run_cfg,
        dist,
        inputs,
        run_dir,
        model,
        loss_of,
        params,
        optimizer,
        scheduler,
        precision.autocast(t.precision, device),
        budget,
        batching.pad_token_id(inputs.tokenizer),
        state,
        state.step,
        str(ckpt) if ckpt else None,
        chosen,
        objective,
    )


def run_steps(s: Setup) -> None:
    """The optimizer steps after s.start_step, until the last, an early stop, or Ctrl-C (checkpoint, exit 130)."""
    from lorakit.training.tracking import Tracker

    t, dist = s.cfg.train, s.dist
    tracker = None
    if dist.rank == 0:
        tracker = Tracker(s.cfg.tracking, s.run_dir, s.cfg.model_dump(mode="json"), s.start_step)
    stop = guards.StopFlag()
    window = Window()
    bar = tqdm(
        total=s.n_steps, initial=s.start_step, desc="train", unit="step", disable=dist.rank != 0, dynamic_ncols=True
    )
    try:
        for step, _epoch, idxs in batching.optimizer_steps(
            len(s.data.train), s.inputs.samples_per_step, t.epochs, t.max_steps, t.seed
        ):
            if step <= s.start_step:
                continue
            grad_norm = _optimizer_step(s, [s.data.train[i] for i in idxs], window)
            s.state.step = step
            bar.update(1)
            if step % t.logging_steps == 0 or step == s.n_steps:
                row = _log_row(s, window, grad_norm)
                bar.set_postfix(loss=f"{row['loss']:.4f}")
                if tracker:
                    tracker.log(step, row)
                window = Window()

            at_save = step % t.save_steps == 0
            stopped_early = False
            if s.data.eval and (step % (t.eval_steps or t.save_steps) == 0 or step == s.n_steps):
                improved, stopped_early = _evaluate(s, tracker)
                at_save = at_save or improved  # keep the best weights on disk even between regular saves
            stopping = dist.any(stop.requested)
            if (at_save or stopping) and step < s.n_steps:
                _save_checkpoint(s)
            if stopping:
                bar.close()
                dist.print(
                    f"\ninterrupted at step {step}; checkpoint saved. Continue with: lorakit train <config> --resume"
                )
                sys.exit(stop.exit_code)
            if stopped_early:
                break
    finally:
        bar.close()
        stop.restore()
        fused.release()
        if tracker:
            tracker.close()


def finish(s: Setup) -> None:
    """Write the final adapter (with the tokenizer), run.json and the plots."""
    from lorakit.training.tracking import write_plots

    full = s.dist.full_state(s.model)
    if s.dist.rank == 0:
        _write_outputs(s, full)
        write_plots(s.run_dir)
        print(f"run saved to {s.run_dir} (adapter in {s.run_dir / 'adapter'})")
    s.dist.barrier()


def _optimizer_step(s: Setup, units: list[dict], window: Window) -> torch.Tensor:
    """Forward and backward over this rank's micro-batches, then one optimizer step; the loss is
    normalised by the objective's denominator of the whole optimizer step (SFT: its supervised tokens),
    so 1 x 8 and 8 x 1 give the same gradient. Returns the gradient norm before clipping."""
    t, dist, objective = s.cfg.train, s.dist, s.objective
    micro = objective.micro_batches(objective.rollout(s, units), s.pad_id, s.budget, dist.world)
    denominator = objective.begin_step(micro)
    loss_sum, metric_sums, real = None, {}, 0
    for mb, weight in dist.share(micro):
        mb = batching.to_device(mb, s.device)
        with s.autocast:
            out = objective.loss(s.loss_of, mb)
        (out.loss * (weight * dist.world / max(1, denominator))).backward()
        # summed on the device and read once per step: a read per micro-batch would stall a GPU's queue
        part = out.loss.detach().float() * weight
        loss_sum = part if loss_sum is None else loss_sum + part
        for k, v in out.metrics.items():
            metric_sums[k] = metric_sums.get(k, 0) + v.float() * weight
        real += weight * batching.real_tokens(mb)
    step_loss = dist.sum(float(loss_sum) if loss_sum is not None else 0.0)
    window.loss += step_loss
    window.denominator += denominator
    window.tokens += real
    for k, v in metric_sums.items():
        window.metrics[k] = window.metrics.get(k, 0.0) + dist.sum(float(v))
    dist.all_reduce_grads(s.params)
    grad_norm = torch.nn.utils.clip_grad_norm_(s.params, t.max_grad_norm if t.max_grad_norm > 0 else 1e9)
    _stop_if_diverged(s, step_loss, float(grad_norm))
    s.optimizer.step()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    return grad_norm


def _log_row(s: Setup, window: Window, grad_norm) -> dict:
    elapsed = time.perf_counter() - window.t0
    per = max(1, window.denominator)
    return {
        "loss": window.loss / per,
        "lr": s.scheduler.get_last_lr()[0],
        "grad_norm": float(grad_norm),
        "epoch": round(s.state.step * s.inputs.samples_per_step / len(s.data.train), 3),
        "tokens_per_s": window.tokens * s.dist.world / max(elapsed, 1e-9),
        **{k: v / per for k, v in window.metrics.items()},
    }


def _evaluate(s: Setup, tracker) -> tuple[bool, bool]:
    """The objective's held-out figures at this step: (the best eval_loss so far, patience used up)."""
    t = s.cfg.train
    figures = s.objective.evaluate(s.loss_of, s.data.eval, s.pad_id, s.device, s.autocast, s.budget)
    improved = s.state.track_best(figures["eval_loss"], s.run_dir)
    if tracker:
        tracker.log(s.state.step, figures)
    patience = t.early_stopping_patience
    if patience and s.state.evals_without_improvement >= patience:
        s.dist.print(f"early stopping at step {s.state.step}: no eval improvement in {patience} evaluations")
        return improved, True
    return improved, False


def _save_checkpoint(s: Setup) -> None:
    s.state.objective = s.objective.state_dict()
    full = s.dist.full_state(s.model, s.optimizer)  # collective under FSDP: every rank calls it
    if s.dist.rank == 0:
        s.last_good = str(
            checkpoint.save_checkpoint(
                s.run_dir, s.state.step, s.model, s.optimizer, s.scheduler, s.state.as_dict(), full
            )
        )
        best = s.state.best_checkpoint
        checkpoint.rotate(s.run_dir, s.cfg.train.save_total_limit, Path(best) if best else None)


def _stop_if_diverged(s: Setup, loss_sum: float, grad_norm: float) -> None:
    """A non-finite step ends the run before the optimizer applies it; run.json records it as diverged."""
    step = s.state.step + 1
    try:
        guards.check_finite(step, loss_sum, grad_norm, s.last_good)
    except guards.Diverged:
        if s.dist.rank == 0:
            write_json(
                s.run_dir / "run.json", {"status": "diverged", "step": step, "last_good_checkpoint": s.last_good}
            )
        raise


def _write_outputs(s: Setup, full: dict | None) -> None:
    from lorakit.training.tracking import read_metrics

    with atomic_dir(s.run_dir / "adapter", overwrite=True) as tmp:
        s.model.save_pretrained(tmp, state_dict=full["adapter"] if full else None)
        s.inputs.tokenizer.save_pretrained(tmp)
    losses = [r["loss"] for r in read_metrics(s.run_dir / "metrics.jsonl") if "loss" in r]
    write_json(
        s.run_dir / "run.json",
        {
            "status": "completed",
            "base_model": s.cfg.model.name,
            "base_model_path": str(s.inputs.model_path),
            "steps": s.state.step,
            "best_eval_loss": s.state.best_eval_loss,
            "best_step": s.state.best_step,
            "best_checkpoint": checkpoint.existing_best(s.state.as_dict(), s.state.step, s.run_dir),
            "data": s.data.stats,
            "trained_with": {k: v for k, v in (s.state.trained_with or {}).items() if k != "config"},
            "fast_paths": {
                **s.paths.record(s.device),
                "weight_dtype": s.inputs.weight_dtype,
                "compute_dtype": s.inputs.compute_dtype,
            }
            if s.paths
            else None,
            "resumes": s.state.resumes,
            "final_train_loss": losses[-1] if losses else None,
        },
    )


def schedule(kind: str, total: int, warmup_ratio: float):
    """train.lr_scheduler as a LambdaLR factor of the step: linear warmup, then linear, cosine or constant."""
    warmup = int(total * warmup_ratio)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return max(0.0, 1.0 - progress)

    return factor


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
