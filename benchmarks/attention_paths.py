"""Fast path against fallback: forward + backward tokens/s of lorakit's training loss, one family per row
kind of docs/models.md, with lorakit's packed attention (shared prefix stored once) and with transformers'
own attention over the same samples as a padded batch (the fallback: SDPA, or eager where the model
refuses SDPA; docs/models.md says why not packed).

    .venv/bin/python benchmarks/attention_paths.py                 # all four row kinds
    .venv/bin/python benchmarks/attention_paths.py --families gemma2 --steps 6

Models: random configs of the conformance matrix's families at a small-but-not-tiny size (hidden 256,
4 layers, 8 heads of 32, 4 KV heads, vocab 4096, window 128), fp32, LoRA r=8 on all linear layers, the
fused CPU forwards on in both paths. A step is 4 samples of 64 shared + 320, 180, 260 and 120 own tokens
(one packed row, or 4 rows padded to the longest);
the first step is warm-up; the two paths alternate step by step. Tokens/s counts sample tokens (a shared
prefix once per sample, as training's tokens/s does).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "conformance"))

SIZE = dict(
    vocab_size=4096,
    hidden_size=256,
    intermediate_size=704,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=32,
    max_position_embeddings=1024,
    tie_word_embeddings=False,
)
KINDS = {  # row kind -> (family, config changes)
    "qwen3": ("plain causal (Qwen3)", {}),
    "mistral": ("sliding window (Mistral)", dict(sliding_window=128)),
    "gemma2": (
        "softcap + window (Gemma2)",
        dict(sliding_window=128, attn_logit_softcapping=50.0, final_logit_softcapping=30.0, query_pre_attn_scalar=32),
    ),
    "gpt-oss": (
        "sinks + window + MoE (GPT-OSS)",
        dict(
            sliding_window=128,
            num_local_experts=4,
            num_experts_per_tok=2,
            layer_types=["sliding_attention", "full_attention"] * 2,
        ),
    ),
}


def model_for(name: str, fallback: bool):
    import torch
    import transformers
    from families import BY_NAME

    from lorakit.config import LoraConfig
    from lorakit.models.lora import attach_lora
    from lorakit.training import fastpaths

    family = BY_NAME[name]
    cfg = dict(SIZE, **KINDS[name][1])
    if name == "gpt-oss":
        cfg["intermediate_size"] = 176  # per expert
    config = getattr(transformers, family.config)(**cfg)
    torch.manual_seed(0)
    model = attach_lora(transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32), LoraConfig())
    choice = fastpaths.choose(model, mode="fallback" if fallback else "auto")  # train.attention
    fastpaths.apply(model, choice, use_fused=True)
    return model.train(), choice


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=",".join(KINDS))
    ap.add_argument("--steps", type=int, default=5, help="steps per path, the first untimed")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    from lorakit.training import batching, loss

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    prefix = torch.randint(3, 4096, (64,), generator=g).tolist()
    samples = []
    for n in (320, 180, 260, 120):
        own = torch.randint(3, 4096, (n,), generator=g).tolist()
        samples.append({"input_ids": prefix + own, "labels": [-100] * 96 + own[32:]})
    print(f"| row kind | path | tokens/s (median of {args.steps - 1} steps) |\n|---|---|---|")
    for name in args.families.split(","):
        runs = {}
        for fallback in (False, True):
            model, choice = model_for(name, fallback)
            batch = batching.pack(samples, share_prefix=True) if choice.packing else batching.pad(samples, 0)
            runs[fallback] = (model, batch, choice, [])
        for step in range(args.steps):
            for fallback in (False, True):
                model, batch, choice, times = runs[fallback]
                t0 = time.perf_counter()
                loss.summed_loss(model, batch).backward()
                model.zero_grad(set_to_none=True)
                if step:
                    times.append(time.perf_counter() - t0)
        tokens = batching.real_tokens(runs[False][1])
        for fallback in (False, True):
            _, _, choice, times = runs[fallback]
            speed = tokens / sorted(times)[len(times) // 2]
            print(f"| {KINDS[name][0]} | {choice.line().split(';')[0]} | {speed:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
