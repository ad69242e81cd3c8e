"""The training stage: LoRA SFT with packing, supervised-only loss, checkpoints, resume and tracking.

Read top to bottom: set up (device, data, model, optimizer), loop over optimizer steps, finish
(final adapter, run.json, plots). Everything a later stage needs lands in train.output_dir.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from lorakit.models import precision
from lorakit.training import batching, checkpoint, fused
from lorakit.atomic import atomic_dir, write_json, write_text
from lorakit.training.attention import use_packed_attention
from lorakit.config import RunConfig, config_to_yaml
from lorakit.training.distributed import Distributed, LossModule
from lorakit.errors import LorakitError
from lorakit.training.plan import Plan, count_params, estimate_memory_gb, lora_param_count


# train.pack_tokens=auto on CUDA: the budget it picks stays within these bounds
AUTO_PACK_TOKENS = (1024, 16384)
# train.pack_tokens=auto on CPU: batch_size samples per forward, but no packed row over this many tokens per
# sample (512 at batch 4); a long run's peak RSS otherwise follows its longest micro-batch (docs/benchmarks.md)
CPU_TOKENS_PER_SAMPLE = 128


def train(cfg: RunConfig, resume: str | None = None, dry_run: bool = False, overwrite: bool = False) -> Path:
    """Run (or plan, with dry_run) one training run described by `cfg`; returns the run directory."""
    from lorakit.data import prepare_splits
    from lorakit.models import cache_root, load_model, load_tokenizer, resolve_model
    from lorakit.training.tracking import Tracker, check_backends, write_plots

    dist = Distributed.from_env()
    device = _pick_device(cfg.train.device, dist)
    torch.set_num_threads(cfg.train.threads or max(1, (os.cpu_count() or 1) // dist.local_world))
    run_dir = Path(cfg.train.output_dir)
    if not dry_run:
        _check_run_dir(run_dir, resume, overwrite)
    check_backends(cfg.tracking)
    if cfg.model.quantize != "none" and not device.startswith("cuda"):
        raise LorakitError(f"model.quantize: {cfg.model.quantize} (QLoRA) needs a CUDA GPU; "
                           f"set model.quantize=none to train on CPU")
    if not cfg.data.path:
        raise LorakitError("data.path: no training data given (set data.path in the config or data.path=FILE)")

    model_path = resolve_model(cfg.model.name, cfg.model.source, cfg.model.cache_dir)
    tokenizer = load_tokenizer(model_path)
    data = prepare_splits(cfg.data, tokenizer, cache_dir=cache_root(cfg.model.cache_dir) / "prepared")
    if not data.train:
        raise LorakitError(f"data.path: no usable training samples in {cfg.data.path}")

    t = cfg.train
    samples_per_step = t.batch_size * t.grad_accum * dist.world
    n_steps = batching.total_steps(len(data.train), samples_per_step, t.epochs, t.max_steps)
    use_fused = fused.enabled(device) and not (t.fsdp and dist.world > 1)  # sharded: one dtype, peft's forwards
    weight_dtype, upcast, dtype_note = precision.training_weights(cfg.model.dtype, device, t.precision, use_fused)
    if dtype_note:
        dist.print(dtype_note)
    if dry_run:
        plan = _plan(cfg, data, model_path, samples_per_step, n_steps, weight_dtype, device,
                     "float32" if upcast else weight_dtype)
        print(config_to_yaml(cfg))
        print("\n".join(plan.lines()))
        return run_dir

    _seed_everything(t.seed)
    model = load_model(model_path, dtype=weight_dtype, device=device, quantize=cfg.model.quantize)
    from lorakit.models.lora import attach_lora, trainable_parameters

    if cfg.model.quantize != "none" and weight_dtype == "float16":
        # fp16 needs the norms and embeddings upcast to train stably; in bf16 that upcast would only add
        # 4 bytes per embedding weight (1.6 GB on Qwen3-4B) to a base quantised to save memory
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = attach_lora(model, cfg.lora)
    frozen = fused.fuse(model) if use_fused else []
    if upcast:
        precision.upcast_except(model, frozen)
    checkpointing = _use_checkpointing(t.gradient_checkpointing, device)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if t.packing:
        use_packed_attention(model)
    budget = _pack_budget(t, device, model_path, weight_dtype, checkpointing)
    if budget:
        dist.print(f"packing up to {budget.tokens:,} tokens per forward (train.pack_tokens)" if budget.fill else
                   f"{t.batch_size} samples per forward, split where over {budget.tokens:,} tokens (train.pack_tokens)")
    model.train()
    loss_of = dist.shard(model, t.fsdp, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(t.lr_scheduler, n_steps, t.warmup_ratio))
    autocast = precision.autocast(t.precision, device)

    state = {"best_eval_loss": None, "best_checkpoint": None, "evals_without_improvement": 0}
    if resume:
        ckpt = checkpoint.find_resume_point(run_dir, resume)
        state = checkpoint.load_checkpoint(ckpt, model, optimizer, scheduler, sharded=dist.fsdp)
        dist.print(f"resuming from {ckpt} (step {state['step']})")
    elif overwrite and run_dir.exists() and dist.rank == 0:
        shutil.rmtree(run_dir)
    start_step = state.get("step", 0)
    if dist.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "config.yaml", config_to_yaml(cfg))
    trainable, total = trainable_parameters(model)
    dist.print(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.3f}%); "
               f"{len(data.train)} samples, {n_steps} steps")

    tracker = Tracker(cfg.tracking, run_dir, cfg.model_dump(mode="json"), start_step) if dist.rank == 0 else None
    stop = _StopFlag()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    window = {"loss": 0.0, "sup": 0, "tokens": 0, "t0": time.perf_counter()}
    bar = tqdm(total=n_steps, initial=start_step, desc="train", unit="step", disable=dist.rank != 0,
               dynamic_ncols=True)
    step = start_step
    stopped_early = False
    try:
        for step, epoch, idxs in batching.optimizer_steps(len(data.train), samples_per_step, t.epochs,
                                                          t.max_steps, t.seed):
            if step <= start_step:
                continue
            samples = [data.train[i] for i in idxs]
            loss_sum, sup, real = _accumulate(loss_of, samples, t, pad_id, device, autocast, dist, budget)
            dist.all_reduce_grads(params)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm if t.max_grad_norm > 0 else 1e9)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            window["loss"] += loss_sum
            window["sup"] += sup
            window["tokens"] += real
            bar.update(1)

            if step % t.logging_steps == 0 or step == n_steps:
                elapsed = time.perf_counter() - window["t0"]
                row = {"loss": window["loss"] / max(1, window["sup"]), "lr": scheduler.get_last_lr()[0],
                       "grad_norm": float(grad_norm), "epoch": round(step * samples_per_step / len(data.train), 3),
                       "tokens_per_s": window["tokens"] * dist.world / max(elapsed, 1e-9)}
                bar.set_postfix(loss=f"{row['loss']:.4f}")
                if tracker:
                    tracker.log(step, row)
                window = {"loss": 0.0, "sup": 0, "tokens": 0, "t0": time.perf_counter()}

            at_save = step % t.save_steps == 0
            if data.eval and (step % (t.eval_steps or t.save_steps) == 0 or step == n_steps):
                eval_loss = evaluate_loss(loss_of, data.eval, t.batch_size, t.packing, pad_id, device, autocast,
                                          t.share_prefix, budget)
                improved = _track_best(state, eval_loss, step, run_dir)
                if tracker:
                    tracker.log(step, {"eval_loss": eval_loss, "eval_ppl": math.exp(min(eval_loss, 50))})
                if improved and not at_save:
                    at_save = True  # keep the best weights on disk even between regular saves
                if t.early_stopping_patience and state["evals_without_improvement"] >= t.early_stopping_patience:
                    dist.print(f"early stopping at step {step}: no eval improvement in "
                               f"{t.early_stopping_patience} evaluations")
                    stopped_early = True
            stopping = dist.any(stop.requested)
            if (at_save or stopping) and step < n_steps:
                full = dist.full_state(model, optimizer)
                if dist.rank == 0:
                    checkpoint.save_checkpoint(run_dir, step, model, optimizer, scheduler, state, full)
                    best = state.get("best_checkpoint")
                    checkpoint.rotate(run_dir, t.save_total_limit, Path(best) if best else None)
            if stopping:
                bar.close()
                dist.print(f"\ninterrupted at step {step}; checkpoint saved. Continue with: "
                           f"lorakit train <config> --resume")
                sys.exit(130)
            if stopped_early:
                break
    finally:
        bar.close()
        stop.restore()
        fused.release()
        if tracker:
            tracker.close()

    full = dist.full_state(model)
    if dist.rank == 0:
        _finish(run_dir, model, tokenizer, cfg, model_path, step, state, data.stats, full)
        write_plots(run_dir)
        print(f"run saved to {run_dir} (adapter in {run_dir / 'adapter'})")
    dist.barrier()
    return run_dir


def _accumulate(loss_of, samples, t, pad_id, device, autocast, dist, budget=None) -> tuple[float, int, int]:
    """Forward and backward over this rank's micro-batches; the loss is normalised by the supervised
    tokens of the whole optimizer step, so 1 x 8 and 8 x 1 give the same gradient."""
    micro = batching.micro_batches(samples, t.batch_size, t.packing, pad_id, t.share_prefix, budget, dist.world)
    n_sup = sum(batching.supervised_tokens(mb) for mb in micro)
    loss_sum, real = None, 0
    for mb, weight in dist.share(micro):
        mb = batching.to_device(mb, device)
        with autocast:
            loss = loss_of(mb)
        (loss * (weight * dist.world / max(1, n_sup))).backward()
        # summed on the device and read once per step: a read per micro-batch would stall a GPU's queue
        part = loss.detach().float() * weight
        loss_sum = part if loss_sum is None else loss_sum + part
        real += weight * batching.real_tokens(mb)
    loss_sum = dist.sum(float(loss_sum) if loss_sum is not None else 0.0)
    return loss_sum, n_sup, real


@torch.no_grad()
def evaluate_loss(model, samples, batch_size, packing, pad_id, device, autocast, share_prefix=False,
                  budget=None) -> float:
    """Token-mean loss over `samples` (no dropout); `model` is a PEFT model or a `LossModule`."""
    model = model if isinstance(model, LossModule) else LossModule(model)
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    for mb in batching.micro_batches(samples, batch_size, packing, pad_id, share_prefix, budget):
        mb = batching.to_device(mb, device)
        with autocast:
            total += float(model(mb))
        n += batching.supervised_tokens(mb)
    model.train(was_training)
    return total / max(1, n)


def _track_best(state: dict, eval_loss: float, step: int, run_dir: Path) -> bool:
    best = state.get("best_eval_loss")
    if best is None or eval_loss < best:
        state.update(best_eval_loss=eval_loss, best_step=step, evals_without_improvement=0,
                     best_checkpoint=str(run_dir / "checkpoints" / f"checkpoint-{step}"))
        return True
    state["evals_without_improvement"] = state.get("evals_without_improvement", 0) + 1
    return False


def _finish(run_dir, model, tokenizer, cfg, model_path, step, state, stats, full) -> None:
    with atomic_dir(run_dir / "adapter", overwrite=True) as tmp:
        model.save_pretrained(tmp, state_dict=full["adapter"] if full else None)
        tokenizer.save_pretrained(tmp)
    summary = {
        "status": "completed",
        "base_model": cfg.model.name,
        "base_model_path": str(model_path),
        "steps": step,
        "best_eval_loss": state.get("best_eval_loss"),
        "best_step": state.get("best_step"),
        "best_checkpoint": state.get("best_checkpoint"),
        "data": stats,
    }
    from lorakit.training.tracking import read_metrics

    losses = [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
    summary["final_train_loss"] = losses[-1] if losses else None
    write_json(run_dir / "run.json", summary)


def _check_run_dir(run_dir: Path, resume: str | None, overwrite: bool) -> None:
    """Refuse to mix two runs in one folder; say which flag the user wants."""
    if not run_dir.exists() or resume or overwrite:
        return
    if (run_dir / "run.json").exists():
        raise LorakitError(f"{run_dir}: already holds a finished run; pass --overwrite or set train.output_dir")
    ckpts = checkpoint.checkpoint_dirs(run_dir)
    if ckpts:
        raise LorakitError(f"{run_dir}: holds an unfinished run ({ckpts[-1].name}); "
                           f"continue it with --resume or start over with --overwrite")
    if any(run_dir.iterdir()) and not (run_dir / "config.yaml").exists():
        raise LorakitError(f"{run_dir}: folder is not empty and not a lorakit run; choose another train.output_dir")


def _plan(cfg, data, model_path, samples_per_step, n_steps, weight_dtype, device, compute_dtype=None) -> Plan:
    n_params = count_params(model_path)
    lengths = [len(s["input_ids"]) for s in data.train]
    t = cfg.train
    longest = sorted(lengths)[-samples_per_step:] or [0]  # the step of the longest samples
    tokens_micro = sum(longest[-t.batch_size:])  # its largest micro-batch of batch_size samples
    if t.packing and t.pack_tokens == "auto" and device.startswith("cuda"):
        budget = batching.TokenBudget(AUTO_PACK_TOKENS[1])  # the most auto picks, without loading the model
    else:
        budget = _pack_budget(t, device, model_path, weight_dtype, False)
    if budget:  # filled: the step's samples in rows of up to budget tokens; a cap splits that micro-batch
        tokens_micro = max(longest[-1], min(budget.tokens, sum(longest) if budget.fill else tokens_micro))
    mem = estimate_memory_gb(model_path, n_params, weight_dtype, tokens_micro,
                             lora_param_count(model_path, cfg.lora.r, cfg.lora.target_modules),
                             _use_checkpointing(t.gradient_checkpointing, device), compute_dtype)
    return Plan(len(data.train), len(data.eval), sum(lengths),
                sum(sum(1 for x in s["labels"] if x != -100) for s in data.train),
                samples_per_step, n_steps, n_params, weight_dtype, device, mem)


def _schedule(kind: str, total: int, warmup_ratio: float):
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


def _pick_device(choice: str, dist) -> str:
    if choice == "cuda" and not torch.cuda.is_available():
        raise LorakitError("train.device: cuda requested but no CUDA GPU is visible")
    if choice == "cpu" or not torch.cuda.is_available():
        return "cpu"
    torch.cuda.set_device(dist.local_rank)
    return f"cuda:{dist.local_rank}"


def _pack_budget(t, device: str, model_path, weight_dtype: str, checkpointing: bool) -> batching.TokenBudget | None:
    """Tokens per forward (train.pack_tokens). A number fills rows up to that many tokens. auto on CUDA
    fills half the GPU memory still free after loading with activations (the rest is for logits chunks,
    optimizer state and fragmentation); auto on CPU keeps batch_size samples per forward, where larger
    forwards gain little, and only caps the row at CPU_TOKENS_PER_SAMPLE x batch_size tokens (docs/benchmarks.md)."""
    if not t.packing or t.pack_tokens is None:
        return None
    if t.pack_tokens != "auto":
        return batching.TokenBudget(t.pack_tokens)
    if not device.startswith("cuda"):
        return batching.TokenBudget(CPU_TOKENS_PER_SAMPLE * t.batch_size, fill=False)
    from lorakit.training.plan import activation_bytes_per_token

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    per_token = activation_bytes_per_token(model_path, weight_dtype, checkpointing)
    low, high = AUTO_PACK_TOKENS
    return batching.TokenBudget(int(max(low, min(high, free // 2 // per_token))))


def _use_checkpointing(choice, device: str) -> bool:
    return bool(choice) if choice != "auto" else device.startswith("cuda")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _StopFlag:
    """First Ctrl-C asks the loop to checkpoint and stop after the current step; a second one kills."""

    def __init__(self):
        self.requested = False
        self._old = signal.getsignal(signal.SIGINT)
        try:
            signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread (e.g. called from a server); Ctrl-C then stays default
            self._old = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step and saving a checkpoint (Ctrl-C again to abort)", file=sys.stderr)

    def restore(self):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
