"""Top-1 agreement of an exported GGUF with the float32 merge, on the demo's held-out conversations.

    .venv/bin/python benchmarks/export_agreement.py RUN_DIR --quant q8_0 [--tokens 4096] [--threads 2]

Merges RUN_DIR in float32, exports it (`lorakit.export`) at each --quant, loads the GGUF back with
transformers' GGUF loader and compares next-token argmax over the first --tokens tokens of the held-out
conversations (chat template applied). For each disagreement it prints the float32 merge's margin
between its top two logits, to tell quantisation noise on near-ties from a broken file. Also prints the
adapter's LoRA B spread (the synthetic test adapter of tests/unit/export/conftest.py is sized after it).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from importlib import resources
from pathlib import Path

import torch


def heldout_ids(tokenizer, limit: int) -> torch.Tensor:
    rows = json.loads(resources.files("lorakit").joinpath("assets/demo/heldout.json").read_text())
    text = "".join(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["output"]}],
            tokenize=False,
        )
        for r in rows
    )
    return tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[:, :limit]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--quant", nargs="+", default=["q8_0"])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    import lorakit

    adapter = load_file(str(args.run / "adapter" / "adapter_model.safetensors"))
    b = torch.cat([v.flatten() for k, v in adapter.items() if "lora_B" in k])
    print(f"LoRA B: std {float(b.std()):.4f}, mean |B| {float(b.abs().mean()):.4f} over {b.numel():,} values")
    with tempfile.TemporaryDirectory() as tmp:
        merged = lorakit.merge(args.run, Path(tmp) / "merged", dtype="float32")
        tok = AutoTokenizer.from_pretrained(merged)
        ids = heldout_ids(tok, args.tokens)
        model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
        with torch.no_grad():
            f32 = model(ids).logits[0]
        del model
        top2 = f32.topk(2, dim=-1).values
        margin = top2[:, 0] - top2[:, 1]
        for quant in args.quant:
            out = lorakit.export(merged, Path(tmp) / f"gguf-{quant}", quant=quant)
            path = next(out.glob("*.gguf"))
            gguf_model = AutoModelForCausalLM.from_pretrained(
                path.parent, gguf_file=path.name, dtype=torch.float32, config=AutoConfig.from_pretrained(merged)
            ).eval()
            with torch.no_grad():
                got = gguf_model(ids).logits[0]
            differ = (got.argmax(-1) != f32.argmax(-1)).nonzero().flatten()
            agree = 1 - len(differ) / ids.shape[1]
            print(
                f"{quant}: top-1 agreement {agree:.4f} ({ids.shape[1] - len(differ)} of {ids.shape[1]} tokens); "
                f"file {path.stat().st_size / 2**20:.1f} MiB"
            )
            if len(differ):
                print(
                    f"  float32 margins at the {len(differ)} disagreements: "
                    + ", ".join(f"{float(margin[i]):.3f}" for i in differ)
                    + f"; median margin over all tokens {float(margin.median()):.3f}"
                )


if __name__ == "__main__":
    main()
