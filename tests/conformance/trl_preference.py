"""TRL's own preference trainers as the reference for lorakit's reference-free objectives and KTO.

Each helper builds TRL's trainer (trl.experimental.orpo.ORPOTrainer, trl.experimental.cpo.CPOTrainer,
trl.KTOTrainer) around the given PEFT model, takes the first batch its own collator makes, runs TRL's
own loss code on it (get_batch_loss_metrics / compute_loss) and backpropagates. It returns that batch,
so that lorakit is fed exactly the tokens TRL trained on: the comparison is of the losses, the metrics
and the LoRA gradients, not of two tokenizers.

The records are word strings for the matrix's word-level tokenizer (test_matrix.word_tokenizer): the
standard (non-conversational) form of TRL's preference datasets.
"""

from __future__ import annotations

import tempfile

import torch

WORDS = range(3, 300)  # t0 pad, t1 eos, t2 unk


def words(g: torch.Generator, n: int) -> str:
    return " ".join(f"t{int(i)}" for i in torch.randint(WORDS.start, WORDS.stop, (n,), generator=g))


def word_pairs(n: int, seed: int = 0) -> list[dict]:
    """`n` pairs with prompts and answers of varied lengths (some longer than the families' window)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        lengths = torch.randint(3, 14, (3,), generator=g).tolist()
        out.append(
            {
                "prompt": words(g, lengths[0] + 4 * (i % 2)),
                "chosen": " " + words(g, lengths[1]),
                "rejected": " " + words(g, lengths[2] + 6 * (i % 3 == 0)),
            }
        )
    return out


def word_unpaired(n: int, seed: int = 0) -> list[dict]:
    """KTO's unpaired form: `n` completions, desirable and undesirable mixed unevenly."""
    g = torch.Generator().manual_seed(seed)
    return [
        {"prompt": words(g, 3 + i % 4), "completion": " " + words(g, 2 + (3 * i) % 7), "label": i % 3 != 1}
        for i in range(n)
    ]


def lora_grads(model) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all("lora_" in n for n in grads), sorted(grads)[:3]
    return grads


def _args(config_cls, n: int, **kwargs):
    return config_cls(
        output_dir=tempfile.mkdtemp(prefix="trl-ref-"),
        per_device_train_batch_size=n,
        report_to=[],
        use_cpu=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        **kwargs,
    )


def trl_orpo(model, tokenizer, pairs: list[dict], beta: float, max_length: int = 128):
    """(loss, metrics, batch) of TRL's ORPOTrainer on `pairs` as one batch; grads left on `model`."""
    from datasets import Dataset
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    trainer = ORPOTrainer(
        model=model,
        args=_args(ORPOConfig, len(pairs), beta=beta, max_length=max_length),
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    model.train()
    loss, metrics = trainer.get_batch_loss_metrics(model, batch)
    loss.backward()
    return loss.detach(), metrics, batch


def trl_simpo(
    model, tokenizer, pairs: list[dict], beta: float, gamma: float, cpo_alpha: float = 0.0, max_length: int = 128
):
    """(loss, metrics, batch) of TRL's CPOTrainer with loss_type="simpo"; grads left on `model`."""
    from datasets import Dataset
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    args = _args(
        CPOConfig,
        len(pairs),
        beta=beta,
        loss_type="simpo",
        simpo_gamma=gamma,
        cpo_alpha=cpo_alpha,
        max_length=max_length,
    )
    trainer = CPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs), processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    model.train()
    loss, metrics = trainer.get_batch_loss_metrics(model, batch)
    loss.backward()
    return loss.detach(), metrics, batch


def trl_kto(
    model,
    tokenizer,
    rows: list[dict],
    beta: float,
    desirable_weight: float,
    undesirable_weight: float,
    max_length: int = 128,
):
    """(loss, metrics, batch) of trl.KTOTrainer on `rows` as one batch, the reference being the model with
    its adapter switched off (as lorakit's); grads left on `model`."""
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    args = _args(
        KTOConfig,
        len(rows),
        beta=beta,
        desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight,
        max_length=max_length,
    )
    trainer = KTOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    # Given a PEFT model, TRL keeps a frozen copy of its adapter ("ref") as the reference; without that copy
    # it switches the adapter off, which is lorakit's reference (no second copy in memory).
    if "ref" in model.peft_config:
        model.delete_adapter("ref")
        model.set_adapter("default")
    batch = next(iter(trainer.get_train_dataloader()))
    model.train()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items() if v}
    return loss.detach(), metrics, batch


def pair_units(batch: dict) -> list[dict]:
    """lorakit's pair units ({"prompt", "chosen", "rejected"} token lists) of an ORPO/CPO collated batch."""
    units = []
    for i in range(batch["chosen_input_ids"].shape[0]):
        prompt = batch["prompt_input_ids"][i][batch["prompt_attention_mask"][i] == 1].tolist()
        unit = {"prompt": prompt}
        for side in ("chosen", "rejected"):
            ids = batch[f"{side}_input_ids"][i][batch[f"{side}_attention_mask"][i] == 1].tolist()
            answer = batch[f"{side}_labels"][i][batch[f"{side}_labels"][i] != -100].tolist()
            assert ids == prompt + answer, (side, ids, prompt, answer)
            unit[side] = answer
        units.append(unit)
    return units


def unpaired_units(batch: dict) -> list[dict]:
    """lorakit's unpaired units ({"prompt", "completion", "label"}) of a KTO collated batch, in its order."""
    units = []
    for i in range(batch["input_ids"].shape[0]):
        real = batch["attention_mask"][i] == 1
        answer = batch["completion_mask"][i] == 1
        units.append(
            {
                "prompt": batch["input_ids"][i][real & ~answer].tolist(),
                "completion": batch["input_ids"][i][answer].tolist(),
                "label": bool(batch["label"][i]),
            }
        )
    return units
