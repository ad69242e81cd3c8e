"""K-quants written by llama.cpp's own quantizer load in a real llama.cpp and stay close to the float32 merge.

For SmolLM2's real weights with the persona-sized adapter merged (conftest.py), llama.cpp (node-llama-cpp's
libllama, its own kernels) scores 512 held-out tokens; its top-1 token is compared with the float32 merge's
in transformers. The floors sit under what was measured (docs/export.md), and every miss must be a
near-tie of the float32 model, as in the q8_0 test: a broken quantizer misses confident tokens.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import gguf
import pytest
import torch

HERE = Path(__file__).parent / "llama_cpp"
BASE = "smollm2-135m-instruct"
# Measured in llama.cpp over these 511 tokens (docs/export.md): top-1 agreement 95.9% (q6_k), 86.5% (q5_k_m),
# 89.8% (q4_k_m); largest float32 logit gap at a miss 0.70, 3.45, 3.60, median 0.19, 0.57, 0.32. SmolLM2's
# 576 columns do not split into 256-blocks, so most of its Q5_K_M/Q4_K_M tensors fall back to Q5_1/Q5_0
# (and Q6_K's to Q8_0): Q5_K_M is no better than Q4_K_M on this model. Floors: about two points under the
# measurement; (agreement floor, largest gap, median gap) per quant.
FLOORS = {"q6_k": (0.94, 1.0, 0.4), "q5_k_m": (0.84, 4.0, 0.8), "q4_k_m": (0.87, 4.0, 0.8)}
FILE_TYPES = {"q6_k": gguf.LlamaFileType.MOSTLY_Q6_K, "q5_k_m": gguf.LlamaFileType.MOSTLY_Q5_K_M,
              "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M}  # fmt: skip

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (HERE / "node_modules" / "node-llama-cpp").is_dir(),
    reason="llama.cpp for the export tests is not installed (needs node and npm; run `make install`)",
)


def llama_cpp_top1(gguf_file: Path, ids: list[int], lora: list[Path] | None = None) -> tuple[list[int], list[float]]:
    """llama.cpp's argmax (and top-2 margin) after every prefix of `ids`, teacher-forced."""
    request = {"model": str(gguf_file), "tokens": ids, "positions": list(range(len(ids) - 1))}
    if lora:
        request["lora"] = [str(p) for p in lora]
    proc = subprocess.run(["node", "score_gguf.mjs"], input=json.dumps(request), capture_output=True, text=True,
                          cwd=HERE, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)
    return got["top1"], got["margin"]


def heldout_ids(merged: Path, limit: int = 512) -> list[int]:
    """The first `limit` tokens of the demo's held-out conversations, chat template applied (as the q8_0 test)."""
    from importlib import resources

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(merged)
    rows = json.loads(resources.files("lorakit").joinpath("assets/demo/heldout.json").read_text())
    text = "".join(
        tok.apply_chat_template(
            [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["output"]}],
            tokenize=False,
        )
        for r in rows[:8]
    )
    return tok(text, add_special_tokens=False).input_ids[:limit]


@pytest.fixture(scope="module")
def smollm2(exports):
    from transformers import AutoModelForCausalLM

    exported = exports(BASE)
    ids = heldout_ids(exported.merged)
    model = AutoModelForCausalLM.from_pretrained(exported.merged, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1]
    return exported, ids, logits


@pytest.mark.parametrize("quant", list(FLOORS))
def test_k_quant_agrees_with_float32_in_llama_cpp(smollm2, quant):
    exported, ids, logits = smollm2
    path = exported.gguf(quant)
    assert gguf.GGUFReader(path).fields["general.file_type"].contents() == FILE_TYPES[quant]
    got = torch.tensor(llama_cpp_top1(path, ids)[0])
    want = logits.argmax(-1)
    miss = (got != want).nonzero().flatten()
    # how much worse, in the float32 model's own logits, is the token llama.cpp picked where they differ
    regret = (logits[miss, want[miss]] - logits[miss, got[miss]]).tolist()
    agree = 1 - len(miss) / len(want)
    floor, largest, median = FLOORS[quant]
    print(
        f"\n{BASE} {quant} in llama.cpp: top-1 agreement {agree:.4f} over {len(want)} held-out tokens; "
        f"{path.stat().st_size / 1e6:.1f} MB; float32 logit gap at the misses: {sorted(round(r, 3) for r in regret)}"
    )
    assert agree >= floor
    # most misses are near-ties, and none is a token the float32 model ruled out: a broken file misses widely
    assert sorted(regret)[len(regret) // 2] < median if regret else True
    assert max(regret, default=0) < largest, "a confident token changed: more than quantisation noise"


def test_k_quants_shrink_in_order(smollm2):
    exported = smollm2[0]
    sizes = [exported.gguf(q).stat().st_size for q in ("f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m")]
    assert sizes == sorted(sizes, reverse=True), sizes
