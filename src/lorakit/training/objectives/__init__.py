"""Training objectives (train.method): each module says how a batch is laid out, the loss and its
metrics; training/loop.py is the one loop that runs any of them (objectives/base.py: the interface).

Adding a method: write objectives/<name>.py with an Objective subclass, add its line to REGISTRY, and
add the name to TrainConfig.method's choices in config.py."""

from __future__ import annotations

import importlib

# train.method -> "module:class", imported on use so that `lorakit train --help` stays light
REGISTRY = {
    "sft": "lorakit.training.objectives.sft:SFT",
    "dpo": "lorakit.training.objectives.dpo:DPO",
    "orpo": "lorakit.training.objectives.orpo:ORPO",
    "simpo": "lorakit.training.objectives.simpo:SimPO",
    "kto": "lorakit.training.objectives.kto:KTO",
    "grpo": "lorakit.training.objectives.grpo:GRPO",
}


def objective_for(cfg):
    """The Objective of cfg.train.method, built for `cfg`."""
    from lorakit.errors import LorakitError

    method = cfg.train.method
    if method not in REGISTRY:
        raise LorakitError(f"train.method: unknown method {method!r} (expected {', '.join(REGISTRY)})")
    module, cls = REGISTRY[method].split(":")
    return getattr(importlib.import_module(module), cls)(cfg)
