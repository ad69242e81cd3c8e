"""GRPO against trl.GRPOTrainer: the same prompts, the same injected completions and the same reward
functions give the same loss and the same LoRA gradients (fp32, 1e-5), for every loss normalisation,
with and without the KL term, and on a second iteration over a generation batch (clipping active).

TRL's side is its own code end to end from the completions on: `_generate_and_score_completions` with a
`rollout_func` that hands back the injected completions (rewards, advantages, old and reference
log-probs), then `_compute_loss`. lorakit's side packs each group's completions into one row with the
prompt shared, as training does.
"""

from __future__ import annotations

import random

import pytest
import torch
from families import BY_NAME, build
from test_matrix import word_tokenizer

from lorakit.config import LoraConfig
from lorakit.models.lora import attach_lora
from lorakit.training import grpo_step as S
from lorakit.training.attention import use_packed_attention
from lorakit.training.loss import LossModule
from lorakit.training.rewards import Reward
from lorakit.training.rollout import Completion

G, MAX_LEN = 3, 6
PROMPTS = {"p0": [5, 6, 7, 8], "p1": [9, 10]}  # different lengths: TRL left-pads, lorakit packs
ANSWERS = {"p0": "4", "p1": "7"}


def length_reward(completions, answer, **_):
    return [float(len(c) % 5) for c in completions]


def answer_reward(completions, answer, **_):
    return [1.0 if a in c else (None if i == 2 else -0.5) for i, (c, a) in enumerate(zip(completions, answer))]


def completions_for(seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 300) for _ in range(rng.randint(1, MAX_LEN))] for _ in range(G * len(PROMPTS))]


@pytest.fixture(scope="module")
def setup(request, tmp_path_factory):
    family = BY_NAME[request.param]
    tok = word_tokenizer(tmp_path_factory.mktemp("tok"))
    model = attach_lora(build(family), LoraConfig(r=4, alpha=8, target_modules="all-linear"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # an adapter that already moved: KL to the base is not 0
                p.normal_(0, 0.3)
    return model, tok


def trl_trainer(model, tok, out, loss_type, beta, num_iterations, temperature, completion_ids):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    def rollout_func(prompts, trainer):
        return {"prompt_ids": [PROMPTS[p] for p in prompts], "completion_ids": completion_ids, "logprobs": None}

    args = GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=G * len(PROMPTS),
        num_generations=G,
        max_completion_length=MAX_LEN,
        use_cpu=True,
        report_to=[],
        bf16=False,
        loss_type=loss_type,
        beta=beta,
        num_iterations=num_iterations,
        epsilon=0.2,
        epsilon_high=0.28,
        temperature=temperature,
        save_strategy="no",
        logging_steps=1,
    )
    data = Dataset.from_list([{"prompt": p, "answer": a} for p, a in ANSWERS.items()])
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[length_reward, answer_reward],
        args=args,
        train_dataset=data,
        processing_class=tok,
        rollout_func=rollout_func,
    )
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop; one micro-batch per step here
    if "ref" in model.peft_config:
        # Given a PeftModel and beta > 0, TRL copies the adapter as it is now into a frozen "ref" adapter. A
        # run starts from a fresh adapter (B = 0), where that copy is the base model; lorakit's reference is
        # the base (adapter off). The test's adapter is not fresh (so KL is not 0): drop the copy, and TRL
        # takes its other documented path, the adapter disabled.
        model.delete_adapter("ref")
    return trainer


def lora_grads(model) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def step_since_rollout(model, micro, temperature):
    """Move the adapter as an optimizer step would have since the rollout, so that ratios leave 1 and some
    are clipped, but none lies so close to a clip bound (0.8, 1.28) that rounding decides its side."""
    start = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    for seed in range(20):
        torch.manual_seed(seed)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in start:
                    p.copy_(start[n] + torch.randn_like(p) * 0.7)
            ratio = torch.exp(S.completion_logprobs(model, micro, temperature) - micro["old_logps"])
        margin = float(torch.minimum((ratio - 0.8).abs(), (ratio - 1.28).abs()).min())
        adv = micro["advantages"]
        if margin > 2e-3 and (((ratio < 0.8) & (adv < 0)) | ((ratio > 1.28) & (adv > 0))).any():
            return
    raise AssertionError("no well-posed perturbation found")


CASES = [
    (loss_type, beta, iterations)
    for loss_type in ("grpo", "bnpo", "dr_grpo", "dapo")
    for beta, iterations in ((0.0, 1), (0.05, 2))
]


@pytest.mark.parametrize("setup", ["qwen3", "llama3"], indirect=True)
@pytest.mark.parametrize("loss_type, beta, iterations", CASES)
def test_loss_and_lora_gradients_equal_trl(setup, loss_type, beta, iterations, tmp_path):
    model, tok = setup
    base = model.get_base_model()
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    try:
        check(model, tok, base, loss_type, beta, iterations, tmp_path)
    finally:  # the next case starts from the same adapter, whatever this one did to it
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in snapshot:
                    p.copy_(snapshot[n])
        model.zero_grad(set_to_none=True)


def check(model, tok, base, loss_type, beta, iterations, tmp_path):
    temperature = 0.7 if iterations > 1 else 1.0
    completion_ids = completions_for(sum(map(ord, loss_type)) + iterations)  # fixed per case
    inputs = [{"prompt": p, "answer": ANSWERS[p]} for p in PROMPTS for _ in range(G)]

    # TRL: scores the completions and keeps old/ref log-probs, as at generation time
    base.set_attn_implementation("sdpa")
    model.train()
    trainer = trl_trainer(model, tok, tmp_path, loss_type, beta, iterations, temperature, completion_ids)
    trl_inputs = trainer._generate_and_score_completions(inputs)

    # lorakit: the same completions, scored, packed; old/ref log-probs from its own forward
    settings = S.GRPOSettings(
        num_generations=G,
        max_completion_length=MAX_LEN,
        temperature=temperature,
        beta=beta,
        epsilon=0.2,
        epsilon_high=0.28,
        num_iterations=iterations,
        loss_type=loss_type,
    )
    records = [{"prompt": p, "answer": a} for p, a in ANSWERS.items()]
    completions = [
        Completion(i // G, PROMPTS[p["prompt"]], ids, tok.decode(ids, skip_special_tokens=True), False)
        for i, (p, ids) in enumerate(zip(inputs, completion_ids))
    ]
    use_packed_attention(base)
    scores, advantages, _ = S.score_completions(
        completions, records, [Reward("length_reward", length_reward), Reward("answer_reward", answer_reward)], settings
    )
    torch.testing.assert_close(advantages, trl_inputs["advantages"], rtol=1e-5, atol=1e-6)
    units = S.completion_units(completions, advantages)
    pack = S.pack_completions
    if iterations > 1:
        S.attach_fixed_logprobs(units, lambda b: S.completion_logprobs(model, b, temperature), "old_logps", 4, pack)
    if beta:

        def reference(batch):
            with model.disable_adapter():
                return S.completion_logprobs(model, batch, temperature)

        S.attach_fixed_logprobs(units, reference, "ref_logps", 4, pack)

    def padded(key):
        mask = trl_inputs["completion_mask"].bool()
        out = torch.zeros(mask.shape)
        out[mask] = torch.tensor([x for u in units for x in u[key]])
        return out

    if iterations > 1:
        torch.testing.assert_close(padded("old_logps"), trl_inputs["old_per_token_logps"], rtol=1e-5, atol=1e-6)
    if beta:
        torch.testing.assert_close(padded("ref_logps"), trl_inputs["ref_per_token_logps"], rtol=1e-5, atol=1e-6)
    micro = pack(units)
    if iterations > 1:
        step_since_rollout(model, micro, temperature)

    base.set_attn_implementation("sdpa")
    trl_loss = trainer._compute_loss(model, trl_inputs)
    trl_loss.backward()
    expected = lora_grads(model)
    if iterations > 1:
        assert trainer._metrics["train"]["clip_ratio/region_mean"][-1] > 0  # clipping really is active

    use_packed_attention(base)
    summed, _ = S.micro_loss(S.completion_logprobs(model, micro, temperature), micro, settings)
    loss = summed / S.step_denominator(settings, micro["n_samples"], micro["completion_tokens"], 1)
    loss.backward()
    got = lora_grads(model)

    runs = [(loss, got)]
    if temperature == 1.0:  # what training runs: the fused head through the LossModule (no temperature)
        fused_logp = LossModule(model)(micro, "token_logprobs")
        summed, _ = S.micro_loss(fused_logp, micro, settings)
        fused = summed / S.step_denominator(settings, micro["n_samples"], micro["completion_tokens"], 1)
        fused.backward()
        runs.append((fused, lora_grads(model)))
    for loss, got in runs:
        assert_equal(loss, got, trl_loss, expected)


def assert_equal(loss, got, trl_loss, expected):
    torch.testing.assert_close(loss, trl_loss, rtol=1e-5, atol=1e-7)
    assert expected.keys() == got.keys() and expected
    for name in expected:
        # rtol 1e-5 with an absolute floor at 1e-5 of the tensor's largest entry, as the conformance matrix
        # (TRL left-pads prompts, lorakit packs them: the sums run in another order)
        torch.testing.assert_close(
            got[name],
            expected[name],
            rtol=1e-5,
            atol=1e-5 * float(expected[name].abs().max()),
            msg=lambda m, name=name: f"{name}: {m}",
        )
