"""Attach a LoRA adapter (PEFT) to a loaded causal LM according to the `lora` config section."""

from __future__ import annotations

import contextlib
import warnings

from lorakit.config import LoraConfig
from lorakit.errors import LorakitError


def attach_lora(model, cfg: LoraConfig):
    """Wrap `model` with a trainable PEFT LoRA adapter; everything else is frozen."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    targets = cfg.target_modules
    if isinstance(targets, list):
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        missing = [t for t in targets if t not in names]
        if missing:
            raise LorakitError(
                f"lora.target_modules: {missing} not found in the model; "
                f"linear layers are e.g. {sorted(_linear_names(model))[:8]}"
            )
    peft_cfg = PeftLoraConfig(
        task_type="CAUSAL_LM",
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        use_rslora=cfg.use_rslora,
        use_dora=cfg.use_dora,
        modules_to_save=cfg.modules_to_save or None,
    )
    with peft_quietly():
        return get_peft_model(model, peft_cfg)


@contextlib.contextmanager
def peft_quietly():
    """Wrapping a model in peft reads transformers' deprecated `is_gradient_checkpointing`: a FutureWarning
    the user can do nothing about, silenced here only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _linear_names(model) -> set[str]:
    import torch

    return {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
