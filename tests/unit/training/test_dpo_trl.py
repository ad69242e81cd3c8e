"""DPO equals TRL's DPOTrainer (1.16, with peft: reference = adapter off): loss and LoRA gradients for
the sigmoid, ipo and hinge losses (and robust, rpo_alpha) on the same pairs, model and truncation,
fp32, rtol 1e-5, on three families of the conformance matrix (mistral: sliding window; gemma2: window
and logit softcaps). TRL's loss is its trainer's own compute_loss on its own collated batch."""

import sys
import warnings
from pathlib import Path

import pytest
import torch

from lorakit.config import RunConfig
from lorakit.training.attention import use_packed_attention
from lorakit.training.loss import LossModule
from lorakit.training.objectives.dpo import DPO

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "conformance"))
from families import BY_NAME, build  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MAX_LENGTH = 24  # cuts the longest completion below: truncation is part of the comparison


def ids(seed, n):
    return torch.randint(3, 300, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


# two prompts of different lengths, completions of different lengths (one longer than MAX_LENGTH allows)
PAIRS = [
    {"prompt": ids(1, 7), "chosen": ids(2, 5), "rejected": ids(3, 9)},
    {"prompt": ids(4, 11), "chosen": ids(5, 20), "rejected": ids(6, 4)},
    {"prompt": ids(7, 6), "chosen": ids(8, 3), "rejected": ids(9, 6)},
]


def truncated(pairs):
    """lorakit's rule (data/preference_tokens.py): prompt whole, completions cut to fit MAX_LENGTH."""
    room = lambda p: MAX_LENGTH - len(p["prompt"])  # noqa: E731
    return [
        {"prompt": p["prompt"], "chosen": p["chosen"][: room(p)], "rejected": p["rejected"][: room(p)]} for p in pairs
    ]


def tiny_tokenizer():
    """A word-level tokenizer inside the tiny models' vocabulary, built offline: TRL's init tokenizes
    one placeholder record with it (its batches below are collated from PAIRS' ids)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<eos>", "<unk>", "hi", "yes", "no", "user", "assistant", ":"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} <eos> {% endfor %}"
        "{% if add_generation_prompt %}assistant : {% endif %}"
    )
    return tok


def trl_trainer(family, loss, tmp_path, **kw):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    tok = tiny_tokenizer()
    args = DPOConfig(
        output_dir=str(tmp_path),
        beta=0.3,
        loss_type=loss,
        max_length=MAX_LENGTH,
        report_to=[],
        gradient_checkpointing=False,
        bf16=False,
        fp16=False,
        use_cpu=True,
        **kw,
    )
    data = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": "hi"}],
                "chosen": [{"role": "assistant", "content": "yes"}],
                "rejected": [{"role": "assistant", "content": "no"}],
            }
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = DPOTrainer(
            build(BY_NAME[family]),
            args=args,
            train_dataset=data,
            processing_class=tok,
            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, task_type="CAUSAL_LM"),
        )
    torch.manual_seed(5)
    with torch.no_grad():
        for n, p in trainer.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    return trainer


def lorakit_model(family, adapter: dict, packed: bool = True):
    from lorakit.config import LoraConfig
    from lorakit.models.lora import attach_lora

    model = attach_lora(build(BY_NAME[family]), LoraConfig(r=4, alpha=8, target_modules=TARGETS))
    missing = model.load_state_dict(adapter, strict=False)
    assert not [k for k in missing.missing_keys if "lora" in k]
    if packed:
        use_packed_attention(model)
    return model.train()


def lorakit_loss(model, pairs, packing, **train):
    cfg = RunConfig(
        train=dict(method="dpo", dpo_beta=0.3, batch_size=len(pairs), packing=packing, share_prefix=packing, **train)
    )
    objective = DPO(cfg)
    micro = objective.micro_batches(pairs, 0, None, 1)
    n = objective.begin_step(micro)
    loss_of = LossModule(model)
    total = sum(objective.loss(loss_of, mb).loss for mb in micro) / n
    model.zero_grad()
    total.backward()
    return total.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def trl_loss(trainer):
    examples = [{"prompt_ids": p["prompt"], "chosen_ids": p["chosen"], "rejected_ids": p["rejected"]} for p in PAIRS]
    batch = trainer.data_collator(examples)
    model = trainer.model.train()
    model.zero_grad()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    adapter = {n: p.detach().clone() for n, p in model.named_parameters() if "lora" in n}
    return loss.detach(), grads, adapter


def assert_same(got, expected):
    assert torch.allclose(got[0], expected[0], rtol=1e-5), (got[0], expected[0])
    assert got[1].keys() == expected[1].keys() and got[1]
    for name, g in got[1].items():
        scale = float(expected[1][name].abs().max())
        # float32 sums in another order: entries near zero are compared against the tensor's largest
        assert torch.allclose(g, expected[1][name], rtol=1e-5, atol=1e-5 * scale), name


# (TRL loss_type, its extra settings, lorakit's train settings); one TRL trainer per family, its loss
# settings switched between cases (they are read at each compute_loss)
LOSSES = [
    (["sigmoid"], {}, dict(dpo_loss="sigmoid")),
    (["ipo"], {}, dict(dpo_loss="ipo")),
    (["hinge"], {}, dict(dpo_loss="hinge")),
    (["robust"], dict(label_smoothing=0.2), dict(dpo_loss="robust", label_smoothing=0.2)),
    (["sigmoid", "sft"], dict(loss_weights=[1.0, 0.7]), dict(dpo_loss="sigmoid", rpo_alpha=0.7)),
]


@pytest.mark.parametrize("family", ["qwen3", "mistral", "gemma2"])
def test_dpo_loss_and_gradients_equal_trl(family, tmp_path):
    trainer = trl_trainer(family, ["sigmoid"], tmp_path)
    pairs = truncated(PAIRS)
    for loss_types, trl_settings, train in LOSSES:
        trainer.loss_types = loss_types
        trainer.loss_weights = trl_settings.get("loss_weights", [1.0] * len(loss_types))
        trainer.label_smoothing = trl_settings.get("label_smoothing", 0.0)
        t_loss, t_grads, adapter = trl_loss(trainer)
        got = lorakit_loss(lorakit_model(family, adapter), pairs, packing=True, **train)
        assert_same(got, (t_loss, t_grads))
    # the padded layout (for models without packed attention) too
    got = lorakit_loss(lorakit_model(family, adapter, packed=False), pairs, packing=False, **train)
    assert_same(got, (t_loss, t_grads))


def test_first_sigmoid_loss_is_ln2_with_lora_b_zero():
    from lorakit.config import LoraConfig
    from lorakit.models.lora import attach_lora

    model = attach_lora(build(BY_NAME["qwen3"]), LoraConfig(r=4, alpha=8, target_modules=TARGETS))
    use_packed_attention(model)
    value, _ = lorakit_loss(model.train(), truncated(PAIRS), packing=True)
    assert abs(float(value) - float(torch.log(torch.tensor(2.0)))) < 1e-7
