"""Training speed, memory and quality: the tutorial's recipe vs TRL SFTTrainer vs `lorakit train`.

    .venv/bin/python benchmarks/train_speed.py --model smollm2-135m-instruct --rounds 3

Methods (each run in its own subprocess, rounds interleaved a,b,c,a,b,c,...):
  a  the tutorial's recipe, reproduced: its process_func (literal "<s>" prefix, system prompt, empty
     think block where the tokenizer has <think>, answer + pad token, MAX_LENGTH 1024), peft LoraConfig
     (r=8, alpha=32, dropout=0.1, seven projections), model.enable_input_require_grads(),
     transformers Trainer + TrainingArguments(batch 4, accum 4, gradient_checkpointing=True, lr 1e-4,
     report_to="none"), DataCollatorForSeq2Seq(padding=True). Benchmark changes: max_steps instead
     of 3 epochs, save_strategy="no", logging_steps=1 (all methods log every step, so a final train
     loss can be read the same way).
  b  TRL SFTTrainer, best settings for the job: conversational prompt/completion records (system +
     user prompt, assistant completion, enable_thinking=False for Qwen3), completion_only_loss=True,
     padding_free=True (max_length=None: TRL refuses padding_free with max_length unless packing; every
     sample here is far below 1024 tokens), peft_config = the same LoRA, batch 4 x accum 4, lr 1e-4,
     bf16 autocast where the hardware has fast bf16, gradient checkpointing off.
  b_gc  as b with gradient_checkpointing=True (TRL's default); run it with --methods a,b,b_gc,c to
     check which TRL variant is faster; c/b then uses the faster one.
  c  lorakit.train() with lorakit's defaults (packing, supervised-only chunked loss, no gradient
     checkpointing, precision auto, lora dropout 0.0, pack_tokens auto: on CUDA a step's samples run
     in as few forwards as memory allows, on CPU 4 samples per forward with rows capped at 512 tokens)
     except: LoRA r=8, alpha=32, the seven projections, batch 4 x
     accum 4, lr 1e-4, max_steps, logging_steps=1, save_steps > max_steps.
  c_low  as c with `--preset low-memory` (4-bit NF4 base through bitsandbytes + gradient
     checkpointing; CUDA only). Its adapter is evaluated on the unquantised base like the others.
  c_mb4  as c with train.pack_tokens=null: 4 samples per forward whatever the device, no cap (the
     pack_tokens lever switched off).

All methods: the same model, data (the first --samples records of the synthetic set), seed 42,
--steps optimizer steps; step 1 is warm-up and not timed. Weights in --dtype, with one exception on
a CPU without native bf16 (no AVX512-BF16/AMX), where half-precision matmuls are emulated and 7-60x
slower than fp32: there b holds the weights in fp32 (TRL's best setting for that machine), c follows
lorakit's own rule (the frozen projections held in bf16, every matmul in fp32, with a note), and a
keeps --dtype as the tutorial wrote it. Use --dtype float32 for a like-for-like comparison of the
algorithms alone.

Measured per run (medians over rounds are reported):
  tokens/s   real tokens: the tokens of the samples trained on in steps 2..N (padding not counted) /
             wall time of steps 2..N (time between the end of optimizer step 1 and the end of step N;
             model load and tokenization excluded). Every method sees the same samples per step, so
             this ratio is the inverse ratio of time per step. Counted by a forward pre-hook on the
             decoder: per row, from the attention mask (padded), the position restarts (packed), or,
             for lorakit rows whose samples share a prefix stored once, prefix + each sample's own part.
  run/data   tokens the model really ran per real token: > 1 with padding, < 1 with a shared prefix.
  peak mem   CPU: ru_maxrss of the child at the end of training (includes the model load);
             CUDA: torch.cuda.max_memory_allocated.
  train loss mean of the last min(4, N-1) per-step logged losses (each method's own loss on its own
             targets, so not comparable across methods; use eval loss for that).
  eval loss  one shared function, after training, on a fresh base model + the run's saved adapter:
             token-mean cross entropy over answer tokens + <|im_end|> of the --eval-samples held-out
             records, rendered with the model's chat template (system prompt, thinking off).
  MFU        estimated training FLOPs / time / measured matmul peak (matmul_peak.py, same threads;
             bf16 peak when the method computes in bf16 and bf16 is the faster, else fp32). FLOPs, per timed step:
               4 * P * T                 frozen non-embedding matmuls: 2 forward + 2 backward (input
                                         grad); P = q,k,v,o,gate,up,down weights of all layers,
                                         T = real tokens
             + 6 * P_lora * T            LoRA A/B: forward, input grad and weight grad
             + 12 * L * H * sum_t t      attention scores and values, causal, per sample (t = position
                                         1..len): 4 L H t forward, 8 L H t backward; H = heads x head_dim
             + 4 * V * D * positions     LM head (frozen: forward + input grad) on the positions where
                                         the method computes it: a = every padded position; b = every
                                         position on CPU, the labelled ones with Triton on GPU; c = the
                                         labelled ones (positions estimated as T x labelled share of
                                         the method's tokenized data)
             Recomputation under gradient checkpointing and padding positions (except a's LM head) are
             not counted: this is model FLOP utilisation, not hardware FLOP utilisation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SYSTEM = "现在你要扮演皇帝身边的女人--甄嬛"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MODELS = ["smollm2-135m-instruct", "qwen3-tiny-random", "qwen3-0.6b-random", "qwen3-4b-random"]
METHODS = {
    "a": "tutorial (Trainer + DataCollatorForSeq2Seq)",
    "b": "TRL SFTTrainer (padding-free)",
    "b_gc": "TRL SFTTrainer (padding-free, grad ckpt)",
    "c": "lorakit train",
    "c_low": "lorakit train --preset low-memory",
    "c_mb4": "lorakit train, pack_tokens off",
}
SEED = 42


# ----------------------------------------------------------------------------------------------
# helpers shared by the children
# ----------------------------------------------------------------------------------------------


def _torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _fast_bf16(device: str) -> bool:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _best_dtype(name: str, device: str) -> str:
    """The weight dtype a careful user would pick on this hardware: fp32 instead of a half dtype on a
    CPU without native bf16 (there half-precision matmuls are emulated, 7-60x slower). Used for TRL's
    best settings and for the shared evaluation; the tutorial's recipe keeps --dtype as written."""
    if name in ("bfloat16", "float16") and not device.startswith("cuda") and not _fast_bf16(device):
        return "float32"
    return name


def _has_think(tokenizer) -> bool:
    return "<think>" in tokenizer.get_vocab()


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def torch_diff_starts(pos, shared: int, length: int) -> list[int]:
    """Lengths of the samples' own parts in a row whose first `shared` tokens are a shared prefix: each
    own part starts where the position id equals `shared`."""
    starts = (pos == shared).nonzero().flatten().tolist()
    return [b - a for a, b in zip(starts, starts[1:] + [length])]


class Meter:
    """Step end times (global optimizer post-hook) and per-step token counts (decoder pre-hook)."""

    def __init__(self, device: str):
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.device = device
        self.step_times: list[float] = []
        self.real: dict[int, int] = {}
        self.computed: dict[int, int] = {}
        self.rows: dict[int, int] = {}
        self.pairs: dict[int, int] = {}
        self.active = True
        self._opt_handle = register_optimizer_step_post_hook(self._on_step)

    def _on_step(self, optimizer, args, kwargs) -> None:
        if self.active:
            _sync(self.device)
            self.step_times.append(time.perf_counter())

    def attach(self, decoder) -> None:
        decoder.register_forward_pre_hook(self._on_forward, with_kwargs=True)

    def _on_forward(self, module, args, kwargs) -> None:
        if not self.active:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return
        mask, pos = kwargs.get("attention_mask"), kwargs.get("position_ids")
        shared = int(kwargs.get("shared_prefix_len") or 0)  # lorakit: a prefix stored once per row
        if mask is not None and getattr(mask, "dim", lambda: 0)() == 2:
            lengths = [int(x) for x in mask.sum(1).tolist()]
        elif shared:
            own = [int(x) for x in torch_diff_starts(pos[0], shared, ids.shape[1])]
            lengths = [shared + n for n in own]
            pairs = shared * (shared + 1) // 2 + sum(n * shared + n * (n + 1) // 2 for n in own)
        elif pos is not None:
            lengths = []
            for row in pos.tolist():
                n = 0
                for p in row:
                    if p == 0 and n:
                        lengths.append(n)
                        n = 0
                    n += 1
                lengths.append(n)
        else:
            lengths = [ids.shape[1]] * ids.shape[0]
        step = len(self.step_times)
        self.real[step] = self.real.get(step, 0) + sum(lengths)
        self.computed[step] = self.computed.get(step, 0) + ids.numel()
        self.rows[step] = self.rows.get(step, 0) + ids.shape[0]
        if not shared:
            pairs = sum(n * (n + 1) // 2 for n in lengths)
        self.pairs[step] = self.pairs.get(step, 0) + pairs

    def close(self) -> None:
        self.active = False
        self._opt_handle.remove()

    def timed(self) -> dict:
        """Totals over steps 2..N (step index 1..N-1) and the wall time between end of step 1 and N."""
        n = len(self.step_times)
        if n < 2:
            raise RuntimeError(f"need at least 2 optimizer steps, saw {n}")
        steps = range(1, n)
        return {
            "steps_seen": n,
            "timed_steps": n - 1,
            "seconds": self.step_times[-1] - self.step_times[0],
            "real_tokens": sum(self.real.get(s, 0) for s in steps),
            "computed_tokens": sum(self.computed.get(s, 0) for s in steps),
            "rows": sum(self.rows.get(s, 0) for s in steps),
            "attn_pairs": sum(self.pairs.get(s, 0) for s in steps),
        }


def _arch(config) -> dict:
    c = config.get_text_config() if hasattr(config, "get_text_config") else config
    d, heads = c.hidden_size, c.num_attention_heads
    kv = getattr(c, "num_key_value_heads", None) or heads
    hd = getattr(c, "head_dim", None) or d // heads
    inter, layers = c.intermediate_size, c.num_hidden_layers
    per_layer = d * heads * hd + 2 * d * kv * hd + heads * hd * d + 3 * d * inter
    return {
        "hidden": d,
        "layers": layers,
        "attn_width": heads * hd,
        "vocab": c.vocab_size,
        "matmul_params": per_layer * layers,
    }


def _flops(arch: dict, lora_params: int, t: dict, head_positions: float) -> float:
    # tokens the model really ran: padding (a) is not counted, nor the copies of a prefix that
    # lorakit stores once per row instead of once per sample (c)
    tokens = min(t["real_tokens"], t["computed_tokens"])
    return (
        4 * arch["matmul_params"] * tokens
        + 6 * lora_params * tokens
        + 12 * arch["layers"] * arch["attn_width"] * t["attn_pairs"]
        + 4 * arch["vocab"] * arch["hidden"] * head_positions
    )


def _peak_memory(device: str) -> float:
    import resource

    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux -> GiB


def _lora_config(dropout: float):
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        target_modules=TARGETS,
        inference_mode=False,
        r=8,
        lora_alpha=32,
        lora_dropout=dropout,
    )


def _last_losses(losses: list[float], timed_steps: int) -> float | None:
    k = max(1, min(4, timed_steps))
    return statistics.fmean(losses[-k:]) if losses else None


def shared_eval_loss(model_path: str, adapter_dir: str, records: list[dict], dtype: str, device: str) -> float:
    """THE eval loss for every method: token-mean CE over answer + <|im_end|>, chat template, thinking off."""
    import torch
    import torch.nn.functional as F
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=_torch_dtype(dtype)).to(device)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    end_id = tok.convert_tokens_to_ids("<|im_end|>")
    extra = {"enable_thinking": False} if _has_think(tok) else {}
    total, n = 0.0, 0
    with torch.no_grad():
        for r in records:
            msgs = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": r["instruction"] + r.get("input", "")},
            ]
            prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, **extra)
            p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            a_ids = tok(r["output"], add_special_tokens=False)["input_ids"] + [end_id]
            ids = torch.tensor([p_ids + a_ids], device=device)
            logits = model(input_ids=ids).logits[0, len(p_ids) - 1 : -1].float()
            total += float(F.cross_entropy(logits, torch.tensor(a_ids, device=device), reduction="sum"))
            n += len(a_ids)
    return total / n


# ----------------------------------------------------------------------------------------------
# the three methods (run inside a child process)
# ----------------------------------------------------------------------------------------------


def run_tutorial(spec: dict, meter: Meter) -> dict:
    import pandas as pd
    import torch
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    model_path, device = spec["model_path"], spec["device"]
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    think = "<think>\n\n</think>\n\n" if _has_think(tokenizer) else ""

    def process_func(example):  # the tutorial's, verbatim except the think block for models without it
        MAX_LENGTH = 1024
        input_ids, attention_mask, labels = [], [], []
        instruction = tokenizer(
            f"<s><|im_start|>system\n{SYSTEM}<|im_end|>\n"
            f"<|im_start|>user\n{example['instruction'] + example['input']}<|im_end|>\n"
            f"<|im_start|>assistant\n{think}",
            add_special_tokens=False,
        )
        response = tokenizer(f"{example['output']}", add_special_tokens=False)
        input_ids = instruction["input_ids"] + response["input_ids"] + [tokenizer.pad_token_id]
        attention_mask = instruction["attention_mask"] + response["attention_mask"] + [1]
        labels = [-100] * len(instruction["input_ids"]) + response["input_ids"] + [tokenizer.pad_token_id]
        if len(input_ids) > MAX_LENGTH:
            input_ids = input_ids[:MAX_LENGTH]
            attention_mask = attention_mask[:MAX_LENGTH]
            labels = labels[:MAX_LENGTH]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    df = pd.read_json(spec["train_file"])
    ds = Dataset.from_pandas(df)
    tokenized_id = ds.map(process_func, remove_columns=ds.column_names)
    n_lab = sum(sum(1 for x in r if x != -100) for r in tokenized_id["labels"])
    n_tok = sum(len(r) for r in tokenized_id["input_ids"])

    model = AutoModelForCausalLM.from_pretrained(
        model_path, device_map="auto" if device.startswith("cuda") else None, dtype=_torch_dtype(spec["dtype"])
    )
    model.enable_input_require_grads()
    model = get_peft_model(model, _lora_config(0.1))
    meter.attach(model.get_base_model().get_decoder())
    args = TrainingArguments(
        output_dir=str(Path(spec["work"]) / "trainer"),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=4,
        logging_steps=1,  # tutorial: 10
        max_steps=spec["steps"],  # tutorial: num_train_epochs=3
        save_strategy="no",  # tutorial: save_steps=100
        learning_rate=1e-4,
        save_on_each_node=True,
        gradient_checkpointing=True,
        report_to="none",
        run_name="bench-tutorial",
        use_cpu=device == "cpu",
        seed=SEED,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=tokenized_id,
        data_collator=DataCollatorForSeq2Seq(tokenizer=tokenizer, padding=True),
    )
    trainer.train()
    meter.close()
    mem = _peak_memory(device)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    model.save_pretrained(spec["adapter_dir"])
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    compute_bf16 = spec["dtype"] == "bfloat16"
    del trainer, model
    return {
        "losses": losses,
        "peak_mem_gib": mem,
        "lora_params": lora,
        "labelled_share": n_lab / n_tok,
        "head_rule": "padded",
        "compute": "bf16" if compute_bf16 else spec["dtype"],
        "samples": len(tokenized_id),
        "torch_threads": torch.get_num_threads(),
    }


def run_trl(spec: dict, meter: Meter, gradient_checkpointing: bool) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    model_path, device = spec["model_path"], spec["device"]
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    extra = {"chat_template_kwargs": {"enable_thinking": False}} if _has_think(tokenizer) else {}
    records = json.loads(Path(spec["train_file"]).read_text(encoding="utf-8"))
    ds = Dataset.from_list(
        [
            {
                "prompt": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": r["instruction"] + r["input"]},
                ],
                "completion": [{"role": "assistant", "content": r["output"]}],
                **extra,
            }
            for r in records
        ]
    )
    bf16 = _fast_bf16(device)
    weights = _best_dtype(spec["dtype"], device)
    model = AutoModelForCausalLM.from_pretrained(
        model_path, device_map="auto" if device.startswith("cuda") else None, dtype=_torch_dtype(weights)
    )
    cfg = SFTConfig(
        output_dir=str(Path(spec["work"]) / "trainer"),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=4,
        learning_rate=1e-4,
        logging_steps=1,
        max_steps=spec["steps"],
        save_strategy="no",
        report_to="none",
        gradient_checkpointing=gradient_checkpointing,
        bf16=bf16,
        padding_free=True,
        max_length=None,
        completion_only_loss=True,
        use_cpu=device == "cpu",
        seed=SEED,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=model, args=cfg, train_dataset=ds, processing_class=tokenizer, peft_config=_lora_config(0.1)
    )
    peft_model = trainer.model
    meter.attach(peft_model.get_base_model().get_decoder())
    tds = trainer.train_dataset
    n_lab = (
        sum(sum(m) for m in tds["completion_mask"])
        if "completion_mask" in tds.column_names
        else sum(sum(1 for x in r if x != -100) for r in tds["labels"])
    )
    n_tok = sum(len(r) for r in tds["input_ids"])
    trainer.train()
    meter.close()
    mem = _peak_memory(device)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    peft_model.save_pretrained(spec["adapter_dir"])
    lora = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    try:
        from trl.kernels.chunked_logprob import _use_triton

        compact = _use_triton(torch.device(device))
    except Exception:
        compact = False
    del trainer, peft_model, model
    return {
        "losses": losses,
        "peak_mem_gib": mem,
        "lora_params": lora,
        "labelled_share": n_lab / n_tok,
        "head_rule": "labelled" if compact else "all_but_last",
        "compute": "bf16" if bf16 or weights == "bfloat16" else weights,
        "samples": len(tds),
        "torch_threads": torch.get_num_threads(),
    }


def run_lorakit(spec: dict, meter: Meter, overrides: tuple[str, ...] = ()) -> dict:
    import torch

    import lorakit
    from lorakit.data import prepare_splits
    from lorakit.models import cache_root, load_tokenizer, resolve_model
    from lorakit.models.precision import autocast
    from lorakit.training.tracking import read_metrics

    run_dir = Path(spec["work"]) / "lorakit-run"
    raw = {
        "model": {"name": spec["model"], "dtype": spec["dtype"]},
        "data": {"path": spec["train_file"], "system": SYSTEM},
        "lora": {"r": 8, "alpha": 32, "target_modules": TARGETS},
        "train": {
            "output_dir": str(run_dir),
            "max_steps": spec["steps"],
            "batch_size": 4,
            "grad_accum": 4,
            "lr": 1e-4,
            "logging_steps": 1,
            "save_steps": spec["steps"] + 1,
            "threads": spec["threads"],
            "device": spec["device"],
        },
    }
    cfg = lorakit.load_config(raw, list(overrides))
    tokenizer = load_tokenizer(resolve_model(cfg.model.name))
    data = prepare_splits(cfg.data, tokenizer, cache_dir=cache_root() / "prepared")  # train() reuses this cache
    n_lab = sum(sum(1 for x in s["labels"] if x != -100) for s in data.train)
    n_tok = sum(len(s["input_ids"]) for s in data.train)
    holder = {}

    def measure(setup):  # lorakit.train's hook: the model with its adapter, before the first step
        meter.attach(setup.model.get_base_model().get_decoder())
        holder["model"] = setup.model

    lorakit.train(cfg, overwrite=True, on_setup=measure)
    meter.close()
    mem = _peak_memory(spec["device"])
    losses = [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
    lora = sum(p.numel() for p in holder["model"].parameters() if p.requires_grad)
    ac = autocast(cfg.train.precision, "cuda" if spec["device"].startswith("cuda") else "cpu")
    # lorakit may compute in another dtype than the weights' (fp32 on a CPU without native bf16)
    held = str(holder["model"].get_base_model().get_input_embeddings().weight.dtype).replace("torch.", "")
    spec["adapter_dir"] = str(run_dir / "adapter")
    holder.clear()
    return {
        "losses": losses,
        "peak_mem_gib": mem,
        "lora_params": lora,
        "labelled_share": n_lab / n_tok,
        "head_rule": "labelled",
        "compute": "bf16" if ac._enabled or held == "bfloat16" else held,
        "samples": len(data.train),
        "torch_threads": torch.get_num_threads(),
    }


def child(spec: dict) -> None:
    import gc
    import random

    import numpy as np
    import torch
    from transformers import AutoConfig

    torch.set_num_threads(spec["threads"])
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    meter = Meter(spec["device"])
    m = spec["method"]
    if m == "a":
        res = run_tutorial(spec, meter)
    elif m in ("b", "b_gc"):
        res = run_trl(spec, meter, gradient_checkpointing=m == "b_gc")
    elif m == "c":
        res = run_lorakit(spec, meter, tuple(spec.get("lorakit_set", ())))
    elif m == "c_low":
        from lorakit.config import PRESETS

        res = run_lorakit(spec, meter, tuple(PRESETS["low-memory"]))
    elif m == "c_mb4":
        res = run_lorakit(spec, meter, ("train.pack_tokens=null",))
    else:
        raise SystemExit(f"unknown method {m}")
    gc.collect()
    if spec["device"].startswith("cuda"):
        torch.cuda.empty_cache()
    t = meter.timed()
    arch = _arch(AutoConfig.from_pretrained(spec["model_path"]))
    head = {
        "padded": t["computed_tokens"],
        "all_but_last": t["computed_tokens"] - t["rows"],
        "labelled": t["real_tokens"] * res["labelled_share"],
    }[res["head_rule"]]
    flops = _flops(arch, res["lora_params"], t, head)
    records = json.loads(Path(spec["eval_file"]).read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    eval_loss = shared_eval_loss(
        spec["model_path"], spec["adapter_dir"], records, _best_dtype(spec["dtype"], spec["device"]), spec["device"]
    )
    out = {
        "method": m,
        "round": spec["round"],
        **t,
        **{k: v for k, v in res.items() if k != "losses"},
        "tokens_per_s": t["real_tokens"] / t["seconds"],
        "run_share": t["computed_tokens"] / t["real_tokens"],
        "flops": flops,
        "achieved_gflops": flops / t["seconds"] / 1e9,
        "train_loss": _last_losses(res["losses"], t["timed_steps"]),
        "train_losses": res["losses"],
        "eval_loss": eval_loss,
        "eval_seconds": time.perf_counter() - t0,
        "arch": arch,
    }
    Path(spec["result_file"]).write_text(json.dumps(out, indent=1), encoding="utf-8")


# ----------------------------------------------------------------------------------------------
# the parent: data, matmul peak, interleaved rounds, report
# ----------------------------------------------------------------------------------------------


def _median(rows: list[dict], key: str):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def _fmt(x, nd=2):
    if x is None:
        return "-"
    return f"{x:,.{nd}f}"


def report(results: list[dict], meta: dict) -> tuple[dict, str]:
    summary = {}
    for m in meta["methods"]:
        rows = [r for r in results if r["method"] == m and "error" not in r]
        if not rows:
            summary[m] = {"runs": 0}
            continue
        # against the best the machine can do: where bf16 is emulated (slower than fp32), a bf16 run's
        # utilisation is measured against the fp32 peak, not the far lower bf16 one
        fp32, bf16 = meta["peak"]["fp32_gflops"], meta["peak"]["bf16_gflops"]
        peak = max(fp32, bf16) if rows[0]["compute"] == "bf16" else fp32
        s = {
            k: _median(rows, k)
            for k in (
                "tokens_per_s",
                "seconds",
                "real_tokens",
                "peak_mem_gib",
                "achieved_gflops",
                "train_loss",
                "eval_loss",
                "run_share",
            )
        }
        s.update(
            runs=len(rows),
            compute=rows[0]["compute"],
            peak_gflops=peak,
            mfu=s["achieved_gflops"] / peak if s["achieved_gflops"] and peak else None,
        )
        summary[m] = s
    ratios = {}
    bs = [k for k in ("b", "b_gc") if summary.get(k, {}).get("runs")]
    best_b = max(bs, key=lambda k: summary[k]["tokens_per_s"]) if bs else None
    for mine in [x for x in ("c", "c_low") if summary.get(x, {}).get("runs")]:
        c = summary[mine]
        for ref in [x for x in ("a", best_b) if x and summary.get(x, {}).get("runs")]:
            r = summary[ref]
            ratios[f"{mine}/{ref}"] = {
                "tokens_per_s": c["tokens_per_s"] / r["tokens_per_s"],
                "peak_mem": c["peak_mem_gib"] / r["peak_mem_gib"],
                "eval_loss": c["eval_loss"] / r["eval_loss"],
            }
    mem_name = "peak GPU mem (GiB)" if meta["device"].startswith("cuda") else "peak RSS (GiB)"
    lines = [
        f"model `{meta['model']}`, device {meta['device']}, weights {meta['dtype']}, threads {meta['threads']}, "
        f"{meta['samples']} samples, {meta['steps']} optimizer steps (step 1 untimed), batch 4 x accum 4, "
        f"{meta['rounds']} rounds interleaved; medians. Matmul peak: fp32 {meta['peak']['fp32_gflops']} / "
        f"bf16 {meta['peak']['bf16_gflops']} GFLOP/s.",
        "",
        f"| method | real tokens/s | timed s | {mem_name} | MFU | compute | tokens run / data tokens | train loss | eval loss | runs |",  # noqa: E501
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for m in meta["methods"]:
        s = summary[m]
        if not s.get("runs"):
            lines.append(f"| {m}: {METHODS[m]} | failed | | | | | | | | 0 |")
            continue
        lines.append(
            f"| {m}: {METHODS[m]} | {_fmt(s['tokens_per_s'], 1)} | {_fmt(s['seconds'])} | "
            f"{_fmt(s['peak_mem_gib'])} | {_fmt(100 * s['mfu'] if s['mfu'] else None, 1)}% | "
            f"{s['compute']} | {_fmt(s['run_share'], 2)} | {_fmt(s['train_loss'], 4)} | "
            f"{_fmt(s['eval_loss'], 4)} | {s['runs']} |"
        )
    if ratios:
        lines += ["", "| ratio | tokens/s | peak mem | eval loss |", "|---|---:|---:|---:|"]
        for k, r in ratios.items():
            lines.append(f"| {k} | {r['tokens_per_s']:.2f}x | {r['peak_mem']:.2f}x | {r['eval_loss']:.3f}x |")
    return {"meta": meta, "summary": summary, "ratios": ratios, "runs": results}, "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description="tutorial recipe vs TRL vs lorakit: speed, memory, loss")
    ap.add_argument("--model", default="smollm2-135m-instruct", choices=MODELS)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument(
        "--dtype",
        default="bfloat16",
        choices=["bfloat16", "float32"],
        help="weight dtype (the tutorial loads bfloat16; on a CPU without native bf16 TRL holds fp32 "
        "and lorakit bf16 frozen projections computed in fp32)",
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=256, help="training records (the first N of the data set)")
    ap.add_argument("--eval-samples", type=int, default=64, help="held-out records (the last N of the data set)")
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per run; the first is warm-up")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--methods", default="a,b,c", help="comma list of a, b, b_gc, c, c_low (CUDA only), c_mb4")
    ap.add_argument(
        "--lorakit-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for method c (repeatable), e.g. train.pack_tokens=512: one lever",
    )
    ap.add_argument("--data", default=str(HERE / "data" / "huanhuan_like.json"))
    ap.add_argument(
        "--out",
        default=None,
        help="output stem (writes STEM.json and STEM.md); default benchmarks/results/train_speed-MODEL-DEVICE",
    )
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(json.loads(Path(args.child).read_text(encoding="utf-8")))
        return
    if args.steps < 2:
        ap.error("--steps must be at least 2 (step 1 is warm-up)")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        ap.error(f"unknown methods {bad}; choose from {list(METHODS)}")

    os.environ.setdefault("LORAKIT_CACHE", str(ROOT / "tests" / ".cache"))
    sys.path.insert(0, str(HERE))
    import make_huanhuan_like

    data = Path(args.data)
    if not data.exists():
        make_huanhuan_like.write(data)
    records = json.loads(data.read_text(encoding="utf-8"))
    if args.samples + args.eval_samples > len(records):
        ap.error(f"--samples + --eval-samples > {len(records)} records")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lorakit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    train_file, eval_file = work / "train.json", work / "eval.json"
    train_file.write_text(json.dumps(records[: args.samples], ensure_ascii=False), encoding="utf-8")
    eval_file.write_text(json.dumps(records[-args.eval_samples :], ensure_ascii=False), encoding="utf-8")

    from lorakit.models import resolve_model

    model_path = str(resolve_model(args.model))  # builds a built-in model once, outside any timing
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "MKL_NUM_THREADS": str(args.threads),
        "TOKENIZERS_PARALLELISM": "false",
        "TRANSFORMERS_VERBOSITY": "error",
    }
    peak_out = subprocess.run(
        [
            sys.executable,
            str(HERE / "matmul_peak.py"),
            "--threads",
            str(args.threads),
            "--device",
            args.device,
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    peak = json.loads(peak_out.stdout.strip().splitlines()[-1])
    print(
        f"matmul peak ({args.threads} threads): fp32 {peak['fp32_gflops']} GFLOP/s, bf16 {peak['bf16_gflops']} GFLOP/s",
        flush=True,
    )

    stem = Path(args.out) if args.out else HERE / "results" / f"train_speed-{args.model}-{args.device}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": args.model,
        "device": args.device,
        "dtype": args.dtype,
        "threads": args.threads,
        "samples": args.samples,
        "eval_samples": args.eval_samples,
        "steps": args.steps,
        "rounds": args.rounds,
        "methods": methods,
        "peak": peak,
        "data": str(data),
        "lorakit_set": args.lorakit_set,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    results = []
    for rnd in range(args.rounds):
        for m in methods:
            run_work = work / f"r{rnd}-{m}"
            run_work.mkdir(parents=True, exist_ok=True)
            spec = {
                "method": m,
                "round": rnd,
                "model": args.model,
                "model_path": model_path,
                "device": args.device,
                "dtype": args.dtype,
                "threads": args.threads,
                "steps": args.steps,
                "work": str(run_work),
                "train_file": str(train_file),
                "eval_file": str(eval_file),
                "adapter_dir": str(run_work / "adapter"),
                "result_file": str(run_work / "result.json"),
                "lorakit_set": args.lorakit_set,
            }
            spec_file = run_work / "spec.json"
            spec_file.write_text(json.dumps(spec), encoding="utf-8")
            t0 = time.perf_counter()
            with open(run_work / "log.txt", "w") as log:
                proc = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_file)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if proc.returncode != 0 or not Path(spec["result_file"]).exists():
                tail = (run_work / "log.txt").read_text(errors="replace")[-3000:]
                print(
                    f"round {rnd + 1} {m}: FAILED (exit {proc.returncode}); log {run_work / 'log.txt'}\n{tail}",
                    flush=True,
                )
                results.append({"method": m, "round": rnd, "error": proc.returncode})
                continue
            r = json.loads(Path(spec["result_file"]).read_text(encoding="utf-8"))
            results.append(r)
            print(
                f"round {rnd + 1} {m}: {r['tokens_per_s']:.1f} real tok/s, {r['seconds']:.2f} s timed, "
                f"peak {r['peak_mem_gib']:.2f} GiB, train loss {r['train_loss']:.4f}, eval loss {r['eval_loss']:.4f} "
                f"({time.perf_counter() - t0:.0f} s total)",
                flush=True,
            )
    full, md = report(results, meta)
    stem.with_suffix(".json").write_text(json.dumps(full, indent=1), encoding="utf-8")
    stem.with_suffix(".md").write_text(md, encoding="utf-8")
    print()
    print(md)
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')} (scratch: {work})")


if __name__ == "__main__":
    main()
