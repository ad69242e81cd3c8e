"""The conformance matrix: for every model family lorakit claims, its fast paths (packed attention with a
shared prefix, fused forwards, fused LM-head loss), its merge and its generate core equal transformers'
own eager computation of each sample alone, in fp32. One module-scoped case per family: a tiny random
model saved to a folder with a word-level tokenizer (SmolLM2: the real built-in weights), LoRA attached
with nonzero B, the adapter saved as a run directory."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from families import BY_NAME, FAMILIES, VOCAB, build

from lorakit.config import LoraConfig, ModelConfig, RunConfig, config_to_yaml
from lorakit.inference.engine import Engine, SamplingParams
from lorakit.models import load_model, load_tokenizer, resolve_model
from lorakit.models.lora import attach_lora
from lorakit.training import batching, fastpaths, loss

REAL = "smollm2-135m-instruct"
NAMES = [f.name for f in FAMILIES] + [REAL]
PREFIX = list(range(10, 18))  # a shared, unsupervised prefix (a system prompt's worth)
GREEDY = SamplingParams(temperature=0, max_new_tokens=10)


def sample(n: int, n_prompt: int, seed: int, vocab: int = VOCAB) -> dict:
    g = torch.Generator().manual_seed(seed)
    own = torch.randint(3, vocab, (n,), generator=g).tolist()
    return {"input_ids": PREFIX + own, "labels": [-100] * (len(PREFIX) + n_prompt) + own[n_prompt:]}


# two samples longer than the families' window of 16 (families.WINDOW), one shorter
SAMPLES = [sample(40, 5, 1), sample(9, 2, 2), sample(33, 8, 3)]
PROMPTS = [sample(n, 0, 10 + n)["input_ids"] for n in (16, 9, 22)]


def word_tokenizer(folder: Path):
    """A real fast tokenizer over the tiny models' 300 ids, one word each ("t0".."t299")."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t2"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="t1", pad_token="t0", unk_token="t2")
    tok.save_pretrained(folder)
    return tok


@dataclass
class Case:
    name: str
    base_dir: Path  # the base model folder
    run_dir: Path  # config.yaml + adapter/ (nonzero LoRA B)
    model: torch.nn.Module  # the PEFT model as loaded for inference: never switched to training paths
    samples: list
    prompts: list


@pytest.fixture(scope="module", params=NAMES)
def case(request, tmp_path_factory) -> Case:
    name = request.param
    root = tmp_path_factory.mktemp(name)
    samples, prompts = SAMPLES, PROMPTS
    if name == REAL:
        base_dir = resolve_model(REAL)
        # real token ids: the chat template's opening is the shared prefix
        tok = load_tokenizer(base_dir)
        prefix = tok.apply_chat_template(
            [{"role": "system", "content": "You are a helpful assistant."}], tokenize=False
        )
        ids = tok.encode(prefix, add_special_tokens=False)
        samples = [
            {"input_ids": ids + s["input_ids"][len(PREFIX) :], "labels": [-100] * len(ids) + s["labels"][len(PREFIX) :]}
            for s in SAMPLES
        ]
        prompts = [ids + p[len(PREFIX) :] for p in PROMPTS[:2]]  # two suffice for batching; 135M is not free
    else:
        base_dir = root / "base"
        build(BY_NAME[name]).save_pretrained(base_dir)
        word_tokenizer(base_dir)
    torch.manual_seed(1)
    model = attach_lora(load_model(base_dir, dtype="float32", device="cpu"), LoraConfig())
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1 if name != REAL else 0.01)
    run_dir = root / "run"
    model.save_pretrained(run_dir / "adapter")
    load_tokenizer(base_dir).save_pretrained(run_dir / "adapter")
    (run_dir / "config.yaml").write_text(config_to_yaml(RunConfig(model=ModelConfig(name=str(base_dir)))))
    return Case(name, base_dir, run_dir, model.eval(), samples, prompts)


@pytest.fixture(scope="module")
def reference(case):
    """transformers' eager attention and its own loss (model(labels=...)), each sample alone: the summed
    token loss and the LoRA gradients."""
    model = copy.deepcopy(case.model)
    model.get_base_model().set_attn_implementation("eager")
    model.train()
    total = 0.0
    for s in case.samples:
        labels = torch.tensor([s["labels"]])
        out = model(input_ids=torch.tensor([s["input_ids"]]), labels=labels)
        total = total + out.loss * int((labels[0, 1:] != -100).sum())
    total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all("lora_" in n for n in grads)
    return total.detach(), grads


def assert_grads_equal(model, expected: dict, real: bool) -> None:
    # rtol 1e-5 element-wise, with an absolute floor at 1e-5 of the tensor's largest entry. SmolLM2's 30
    # real layers amplify fp32 rounding: there transformers' own SDPA differs from its eager attention by
    # up to 7e-5 of the largest entry, and so does lorakit (with or without fused forwards): floor 2e-4
    floor = 2e-4 if real else 1e-5
    for name, g in expected.items():
        got = model.get_parameter(name).grad
        assert got is not None, name
        torch.testing.assert_close(
            got, g, rtol=1e-5, atol=floor * float(g.abs().max()), msg=lambda m, name=name: f"{name}: {m}"
        )


def lorakit_training(case, mode: str = "auto", use_fused: bool = True, calls: str = "auto"):
    """A copy of the case's model switched to the paths lorakit's training chooses (train.attention `mode`,
    train.packed_attention `calls`)."""
    model = copy.deepcopy(case.model)
    choice = fastpaths.choose(model, packing=True, mode=mode, calls=calls)
    fastpaths.apply(model, choice, use_fused=use_fused)
    model.train()
    return model, choice


# train.packed_attention: per-sample calls (the CPU's default) or one masked call per row (the GPU's)
@pytest.mark.parametrize("calls", ["per_sample", "whole_row"])
def test_training_loss_and_lora_gradients(case, reference, calls):
    model, choice = lorakit_training(case, calls=calls)
    assert choice.packed, choice.line()  # every family of the matrix runs the fast path
    batch = batching.pack(case.samples, share_prefix=choice.share_prefix)
    assert batch.get("shared_prefix", 0) >= 8
    value = loss.summed_loss(model, batch)
    value.backward()
    expected, grads = reference
    torch.testing.assert_close(value.detach(), expected, rtol=1e-5, atol=0)
    assert_grads_equal(model, grads, case.name == REAL)


def test_transformers_fallback_is_exact_too(case, reference):
    """The path a model with unsupported attention takes: transformers' own attention over a padded batch."""
    model, choice = lorakit_training(case, mode="fallback")
    assert not choice.packing and not choice.share_prefix and "fallback" in choice.line()
    batch = batching.pad(case.samples, pad_id=0)
    value = loss.summed_loss(model, batch)
    value.backward()
    expected, grads = reference
    torch.testing.assert_close(value.detach(), expected, rtol=1e-5, atol=0)
    assert_grads_equal(model, grads, case.name == REAL)


def test_eval_loss(case, reference):
    from lorakit.training.loss import evaluate_loss

    model, _ = lorakit_training(case, use_fused=False)
    got = evaluate_loss(
        model,
        case.samples,
        batch_size=3,
        packing=True,
        pad_id=0,
        device="cpu",
        autocast=torch.autocast("cpu", enabled=False),
        share_prefix=True,
    )
    n_sup = sum(batching.supervised_tokens(batching.pack([s])) for s in case.samples)
    assert got == pytest.approx(float(reference[0]) / n_sup, rel=1e-5)
    # the eval stage's held-out loss: the model as loaded for generation (transformers' attention)
    held_out = evaluate_loss(
        case.model,
        case.samples,
        batch_size=3,
        packing=True,
        pad_id=0,
        device="cpu",
        autocast=torch.autocast("cpu", enabled=False),
    )
    assert held_out == pytest.approx(float(reference[0]) / n_sup, rel=1e-5)


def test_merged_logits_equal_base_plus_adapter(case, tmp_path):
    from lorakit.exporting.merge import merge

    out = merge(case.run_dir, tmp_path / "merged", dtype="float32")
    merged = load_model(out, dtype="float32", device="cpu")
    ids = torch.tensor([case.samples[0]["input_ids"]])
    with torch.no_grad():
        expected = case.model(input_ids=ids).logits
        got = merged(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


@pytest.fixture(scope="module")
def engine(case) -> Engine:
    return Engine.load(str(case.base_dir), adapters={"a": str(case.run_dir)}, dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def alone(case, engine) -> list:
    """The generate core's greedy completion of each prompt on its own."""
    return [engine.generate(p, GREEDY, adapter="a") for p in case.prompts]


def test_generate_core_matches_model_generate(case, engine, alone):
    for prompt, got in zip(case.prompts, alone):
        with torch.no_grad():
            out = case.model.generate(
                input_ids=torch.tensor([prompt]),
                max_new_tokens=GREEDY.max_new_tokens,
                do_sample=False,
                eos_token_id=sorted(engine.eos_ids),
                pad_token_id=engine.tokenizer.pad_token_id,
            )
        new = out[0, len(prompt) :].tolist()
        assert got.completion_tokens == len(new)
        # the engine never shows part of a multi-byte character: a cut-off one at the end stays unshown
        assert got.text == engine.decode([t for t in new if t not in engine.eos_ids]).rstrip("\ufffd")


def test_batched_generation_equals_one_at_a_time(case, engine, alone):
    together = engine.generate_batch(case.prompts, GREEDY, adapter="a")
    assert [(c.text, c.completion_tokens) for c in together] == [(c.text, c.completion_tokens) for c in alone]
