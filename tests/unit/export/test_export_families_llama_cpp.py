"""Every exportable family of the conformance matrix, run by the real llama.cpp (node-llama-cpp's prebuilt
libllama): a tiny random model of the family with the Qwen BPE tokenizer is exported at f16, and
llama.cpp must tokenize lorakit's chat prompt to lorakit's ids, continue it greedily with lorakit's
tokens, and render lorakit's prompt with the chat template it reads from the file. The same base GGUF with a
LoRA adapter GGUF of the family (`--format gguf-lora`'s writer) must continue it as the PEFT model does.

The tokenizer is Qwen's own cut to its first CUT_TOKENS tokens (its first merges, its pre-tokenizer, its
special tokens and chat template): the graph is what differs between families, and a 150k-row vocabulary
made every export, llama.cpp load and logit step ~40x dearer. The full Qwen vocabulary is proven in
test_export_llama_cpp.py and test_export_roundtrip.py.

The models are made "opinionated" (O(1) activations, a wide logit spread) so that a wrong graph detail
(a missed (1+w), RoPE layout, window or multiplier) changes the greedy tokens; ties closer than NEAR_TIE
in float32 may go either way in f16 arithmetic, so the comparison stops at the first such step. All
families share one node process (one llama.cpp load)."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "conformance"))
from families import BY_NAME, build  # noqa: E402
from test_export_llama_cpp import CONVERSATION, HERE, pytestmark  # noqa: E402,F401  (same llama.cpp, same skip)

from lorakit.exporting.adapter_gguf import write_adapter_gguf  # noqa: E402
from lorakit.exporting.gguf_writer import export_refusal, write_gguf  # noqa: E402
from lorakit.exporting.modelfile import hf_prompt  # noqa: E402

MAX_TOKENS = 8
NEAR_TIE = 0.05  # float32 top-2 logit margin below which f16 arithmetic may pick the other token
TOP_PROBS = 5  # llama.cpp's likeliest tokens per step whose probabilities are compared
PROB_RTOL = 0.05

# The settings llama.cpp's graph hard-codes where the matrix's generic config differs from them (the matrix's
# own config is refused: test_export_families.py): the released checkpoints' for Gemma 2 and Qwen3-MoE; for
# GPT-OSS, YaRN with truncate: true (llama.cpp rounds the correction range; the released truncate: false is
# refused, as it moves the probabilities by ~10% here)
RELEASED = {
    "gemma2": dict(tie_word_embeddings=True),
    "qwen3-moe": dict(norm_topk_prob=True),
    "gpt-oss": dict(rope_parameters={**transformers.GptOssConfig().rope_parameters, "truncate": True}),
}
EXPORTED = ["llama3", "qwen2", "qwen3", "qwen3-moe", "gemma2", "gemma3", "phi3", "olmo2", "granite", "gpt-neox",
            "gpt-oss"]  # fmt: skip
# LoRA targets: every linear layer, but for the MoE experts, which llama.cpp's LoRA GGUF cannot hold (refused:
# test_export_refusals.py); Qwen3-MoE adapts attention and its router, GPT-OSS its attention
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
TARGETS = {"qwen3-moe": ATTENTION + ["gate"], "gpt-oss": ATTENTION}  # GPT-OSS's router is no nn.Linear
RANK = 4
CUT_TOKENS = 4096  # byte-level BPE: token 256 + k is merge k, so the first tokens and merges form a tokenizer


def cut_tokenizer(source: Path, out: Path, n: int = CUT_TOKENS) -> Path:
    """`source`'s byte-level BPE kept to its first `n` tokens and the merges that make them; its added
    (special) tokens renumbered to follow them. Everything else (pre-tokenizer, template) is unchanged."""
    spec = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    model = spec["model"]
    model["vocab"] = {t: i for t, i in model["vocab"].items() if i < n}
    model["merges"] = model["merges"][: n - 256]
    for merge in model["merges"]:  # the cut is a tokenizer only if every merge's parts and result survive
        a, b = merge if isinstance(merge, list) else merge.split(" ")
        assert {a, b, a + b} <= model["vocab"].keys(), merge
    for j, added in enumerate(spec["added_tokens"]):
        added["id"] = n + j
    shutil.copytree(source, out)
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    return out


def exported_family(name: str):
    """The matrix family as it is exported (with RELEASED's setting)."""
    family = BY_NAME[name]
    return dataclasses.replace(family, kwargs={**family.kwargs, **RELEASED.get(name, {})})


def opinionated(model) -> None:
    """Weights with O(1) activations (init std 1/sqrt(fan-in)) and norms away from 1, so every graph detail
    moves the logits by far more than f16 rounding."""
    gemma = "gemma" in model.config.model_type
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("sinks"):
                p.normal_(0, 1.0, generator=g)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (0.0 if gemma else 1.0))
            elif p.ndim == 1:
                p.normal_(0, 0.1, generator=g)
            elif "embed_tokens" in name or "embed_in" in name:
                p.normal_(0, 1.0, generator=g)
            else:
                p.normal_(0, _gain(name, model.config) * p.shape[-1] ** -0.5, generator=g)
            p.copy_(p.half().float())  # the weights an f16 file holds exactly


def _gain(name: str, config) -> float:
    if "lm_head" in name or "embed_out" in name:
        return 4.0  # logits a few units apart: clear top-1 margins over the vocabulary
    if getattr(config, "attn_logit_softcapping", None) and name.endswith(("q_proj.weight", "k_proj.weight")):
        return 3.0  # attention scores beyond Gemma 2's cap of 2, so the cap bites
    return 1.0  # (larger gains inside the layers grow f16 rounding as fast as the margins)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, lorakit_cache):
    """family -> (lorakit's prompt ids, prompt text, greedy tokens, top-2 margins), and llama.cpp's answers."""
    from transformers import AutoTokenizer

    from lorakit.inference.engine import Engine
    from lorakit.models.builtin import qwen3_tokenizer_dir

    cut = cut_tokenizer(Path(qwen3_tokenizer_dir(lorakit_cache)), tmp_path_factory.mktemp("cut") / "tokenizer")
    tok = AutoTokenizer.from_pretrained(cut)
    assert len(tok) == CUT_TOKENS + 26 and tok.chat_template  # Qwen's 26 special tokens and its template
    tok_files = tmp_path_factory.mktemp("tokenizer")
    tok.save_pretrained(tok_files)  # once; each model folder gets a copy of the files
    special = dict(
        vocab_size=len(tok),
        bos_token_id=None,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
    )
    stops = {special["eos_token_id"], special["pad_token_id"]}
    ours, requests, ours_models = {}, [], {}
    for name in EXPORTED:
        family = exported_family(name)
        family = dataclasses.replace(family, kwargs={**family.kwargs, **special})
        model = build(family)
        opinionated(model)
        folder = tmp_path_factory.mktemp(name)
        model.save_pretrained(folder / "model")
        for f in tok_files.iterdir():
            shutil.copy(f, folder / "model" / f.name)
        # The GGUF step of `lorakit export` (its Modelfile and card are tested in test_export_modelfile.py)
        # named neutrally: llama.cpp gives every special token Phi-3's rstrip when general.name holds "phi3"
        gguf = folder / "tiny-random-f16.gguf"
        write_gguf(folder / "model", gguf, "f16", "tiny-random")

        engine = Engine(model, tok)
        ids = engine.chat_prompt(CONVERSATION, enable_thinking=False)
        prompt = hf_prompt(engine.tokenizer, CONVERSATION)
        request = {"model": str(gguf), "prompt": prompt, "max_tokens": MAX_TOKENS, "messages": CONVERSATION,
                   "top_probs": TOP_PROBS}  # fmt: skip
        adapted, adapter_gguf = _adapted(model, name, folder)
        for key, run_model, extra in (
            (name, model, {}),
            (f"{name}+lora", adapted, {"lora": [str(adapter_gguf)]}),
        ):
            tokens, margins = _greedy(run_model, ids, stops)
            ours[key] = (run_model, ids, prompt, tokens, margins)
            requests.append({**request, **extra})
        ours_models[name] = model
    proc = subprocess.run(["node", "run_gguf.mjs"], input=json.dumps(requests), capture_output=True, text=True,
                          cwd=HERE, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = dict(zip(ours, json.loads(proc.stdout)))
    for key, (run_model, ids, prompt, tokens, margins) in ours.items():
        ours[key] = (ids, prompt, tokens, margins, _probabilities(run_model, ids, theirs[key]["tokens"]))
    for name in EXPORTED:  # what the base alone gives on the adapted continuation: the adapter must move it
        base_model, lora = ours_models[name], theirs[f"{name}+lora"]
        theirs[f"{name}+lora"]["base_probs"] = _probabilities(base_model, ours[name][0], lora["tokens"])
    return ours, theirs


def _adapted(model, name: str, folder: Path):
    """(PEFT model, its adapter as a llama.cpp LoRA GGUF): a copy of `model` with a LoRA whose product is as
    large as the weights it adapts (B ~ 1/sqrt(r) against peft's A), so it changes the greedy tokens."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules=TARGETS.get(name, "all-linear"))
    torch.manual_seed(7)  # peft draws A from the global generator; this draw has no first-step near-tie
    adapted = get_peft_model(copy.deepcopy(model), config).eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for key, p in adapted.named_parameters():
            if "lora_B" in key:
                p.normal_(0, RANK**-0.5, generator=g)
    adapted.save_pretrained(folder / "adapter")
    out = folder / "tiny-random-lora.gguf"
    base_config = json.loads((folder / "model" / "config.json").read_text())  # as `lorakit export` reads it
    write_adapter_gguf(folder / "adapter", base_config, out, "tiny-random")
    return adapted, out


def _probabilities(model, ids: list[int], path: list[int]) -> torch.Tensor:
    """lorakit's next-token distribution at each step of llama.cpp's own continuation (one forward)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids + path]), logits_to_keep=len(path) + 1).logits[0]
    return logits.double().softmax(-1)


def _greedy(model, ids: list[int], stops: set[int]) -> tuple[list[int], list[float]]:
    """Greedy tokens, and each step's top-2 margin before any final logit softcap (Gemma 2): the cap is
    monotone and computed last, so rounding noise competes with the margin of the head's own logits."""
    tokens, margins, head = [], [], {}
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, out: head.update(logits=out))
    with torch.no_grad():
        for _ in range(MAX_TOKENS):
            logits = model(torch.tensor([ids + tokens]), logits_to_keep=1).logits[0, -1]
            top2 = head["logits"][0, -1].topk(2).values
            margins.append(float(top2[0] - top2[1]))
            token = int(logits.argmax())
            if token in stops:
                break
            tokens.append(token)
    hook.remove()
    return tokens, margins


@pytest.mark.parametrize("name", EXPORTED + [f"{name}+lora" for name in EXPORTED])
def test_llama_cpp_runs_the_family_as_lorakit_does(runs, name):
    ours, theirs = runs
    ids, prompt, want, margins, probs = ours[name]
    got = theirs[name]
    assert got["prompt_tokens"] == ids  # the same vocabulary, merges, pre-tokenizer and special tokens
    assert got["rendered"] == prompt  # the chat template in the file renders lorakit's prompt
    print(f"\n{name}: lorakit {want} / llama.cpp {got['tokens']} / margins {[round(m, 3) for m in margins]}")
    for step, (a, b) in enumerate(zip(want + [None], got["tokens"] + [None])):
        if a != b:
            assert margins[step] < NEAR_TIE, f"step {step}: lorakit {a}, llama.cpp {b} (margin {margins[step]:.3f})"
            break
        if a is None:
            break
    assert margins[0] >= NEAR_TIE, "the first token is a near-tie: the model compares nothing"
    # The whole distribution, not only its argmax: llama.cpp's likeliest tokens at every step of its own
    # continuation have lorakit's probabilities (f16 rounding moves them by ~1e-3 relative).
    worst = _worst(probs, got["top_probs"])
    print(f"{name}: largest relative probability difference {worst:.2e}")
    assert worst < PROB_RTOL
    if name.endswith("+lora"):
        # llama.cpp without the adapter would be 10x further off: the adapter is applied, not the base compared
        # again (Gemma 2's final softcap of 3 flattens its probabilities, so a fixed bound would not see it)
        assert _worst(got["base_probs"], got["top_probs"]) > 10 * worst


def _worst(probs: torch.Tensor, top_probs: list) -> float:
    """Largest relative difference between llama.cpp's likeliest tokens' probabilities and `probs`'."""
    return max(abs(float(probs[step, token]) - p) / p for step, top in enumerate(top_probs) for token, p in top)


def test_the_released_settings_are_what_the_matrix_config_lacks():
    """RELEASED only fills in what llama.cpp's graph hard-codes: the matrix's own config is refused for it."""
    for name, change in RELEASED.items():
        config = build(BY_NAME[name]).config.to_dict()
        assert export_refusal(config), name
        assert export_refusal({**config, **change}) is None, name
