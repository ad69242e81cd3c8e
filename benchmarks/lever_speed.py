"""One lever at a time: forward + backward tokens/s of lorakit's loss on packed micro-batches.

train_speed.py compares whole recipes; this isolates the pieces of lorakit's step (no optimizer, no
logging) so a lever can be switched on and off with everything else fixed:

    .venv/bin/python benchmarks/lever_speed.py --attention sdpa                   # transformers' block mask
    .venv/bin/python benchmarks/lever_speed.py --attention packed                 # per-sample attention
    .venv/bin/python benchmarks/lever_speed.py --attention packed --share-prefix  # lorakit's default
    .venv/bin/python benchmarks/lever_speed.py --attention packed --share-prefix --micro-batch 8
    .venv/bin/python benchmarks/lever_speed.py --attention packed --share-prefix --compile mlp

Data: the huanhuan-shaped set (first --samples records, system prompt as in train_speed.py), LoRA r=8
alpha=32 on the seven projections, fp32 weights. Steps of 16 samples; the first is warm-up. Reports
sample tokens per second (a shared prefix counts once per sample, as in training's tokens/s).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SYSTEM = "现在你要扮演皇帝身边的女人--甄嬛"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main() -> None:
    ap = argparse.ArgumentParser(description="tokens/s of lorakit's forward+backward, one lever at a time")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--attention", choices=["sdpa", "packed"], default="packed")
    ap.add_argument("--share-prefix", action="store_true")
    ap.add_argument("--micro-batch", type=int, default=4, help="samples per packed row")
    ap.add_argument("--steps", type=int, default=4, help="steps of 16 samples; the first is warm-up")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--compile",
        choices=["none", "mlp"],
        default="none",
        help="torch.compile (dynamic shapes) each decoder layer's MLP (whole layers would recompile "
        "for every row layout: the attention reads the segment bounds as Python ints)",
    )
    args = ap.parse_args()

    os.environ.setdefault("LORAKIT_CACHE", str(HERE.parent / "tests" / ".cache"))
    import json

    import torch

    torch.set_num_threads(args.threads)
    from lorakit.config import build_config
    from lorakit.data import prepare_splits
    from lorakit.models import cache_root, load_model, load_tokenizer, resolve_model
    from lorakit.models.lora import attach_lora
    from lorakit.training import batching
    from lorakit.training.attention import use_packed_attention
    from lorakit.training.loss import summed_loss

    sys.path.insert(0, str(HERE))
    import make_huanhuan_like

    data_file = HERE / "data" / "huanhuan_like.json"
    if not data_file.exists():
        make_huanhuan_like.write(data_file)
    subset = Path(cache_root()) / "lever_speed" / f"train{args.samples}.json"
    subset.parent.mkdir(parents=True, exist_ok=True)
    records = json.loads(data_file.read_text(encoding="utf-8"))[: args.samples]
    subset.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")

    path = resolve_model(args.model)
    tokenizer = load_tokenizer(path)
    cfg = build_config(
        {
            "model": {"name": args.model},
            "data": {"path": str(subset), "system": SYSTEM},
            "lora": {"r": 8, "alpha": 32, "target_modules": TARGETS},
        }
    )
    samples = prepare_splits(cfg.data, tokenizer, cache_dir=cache_root() / "prepared").train
    model = load_model(path, dtype="float32", device="cpu")
    if args.attention == "packed":
        use_packed_attention(model)
    model = attach_lora(model, cfg.lora)
    model.train()
    for layer in model.get_base_model().get_decoder().layers if args.compile != "none" else []:
        layer.mlp.compile(dynamic=True)

    def step(i: int) -> tuple[int, int]:
        group = [samples[(16 * i + j) % len(samples)] for j in range(16)]
        real = run = 0
        for mb in batching.micro_batches(group, args.micro_batch, True, tokenizer.pad_token_id, args.share_prefix):
            summed_loss(model, mb).backward()
            real += batching.real_tokens(mb)
            run += mb["input_ids"].numel()
        return real, run

    step(0)
    t0 = time.perf_counter()
    real = run = 0
    for i in range(1, args.steps):
        r, n = step(i)
        real, run = real + r, run + n
    seconds = time.perf_counter() - t0
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"{args.model} attention={args.attention} share_prefix={args.share_prefix} "
        f"micro_batch={args.micro_batch} compile={args.compile} threads={args.threads}: "
        f"{real / seconds:.1f} sample tokens/s ({real} sample tokens, {run} run, {seconds:.1f} s), "
        f"peak RSS {peak:.2f} GiB"
    )


if __name__ == "__main__":
    main()
