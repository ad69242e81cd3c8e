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


@contextlib.contextmanager
def adapter_off(model):
    """The model computes as its base inside this block: every adapter layer's disable flag is set, as
    peft's `disable_adapter()` sets it, and put back after. peft's own context also scans the model's
    status (a repr of every adapter layer) and toggles requires_grad on every adapter weight on the way
    in and out (so an adapter loaded frozen for inference comes out trainable): 46-60 ms per call for
    SmolLM2-135M's 210 adapted layers, paid by every DPO, KTO and GRPO step for its reference pass. Here,
    one walk over the modules: 4.5-6.7 ms (docs/benchmarks.md). Anything but
    LoRA-style adapters (prompt learning and adaption prompts change the forward itself) goes through
    peft's context."""
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    config = model.active_peft_config if isinstance(model, PeftModel) else None
    if config is None or config.is_prompt_learning or config.is_adaption_prompt:
        with model.disable_adapter():
            yield
        return
    layers = [m for m in model.modules() if isinstance(m, (BaseTunerLayer, AuxiliaryTrainingWrapper))]
    before = [m._disable_adapters for m in layers]
    was_disabled = model._adapters_disabled
    try:
        for m in layers:
            m._disable_adapters = True
        model._adapters_disabled = True
        yield
    finally:
        for m, flag in zip(layers, before):
            m._disable_adapters = flag
        model._adapters_disabled = was_disabled
