"""A fake training run directory for tests of the stages after `train` (generate, chat, serve)."""

from pathlib import Path

import torch


def make_run(root: Path, base: str, seed: int) -> Path:
    """A RUN_DIR: config.yaml naming `base` and adapter/ with nonzero LoRA weights."""
    from peft import LoraConfig, get_peft_model

    from lorakit import models
    from lorakit.config import ModelConfig, RunConfig, config_to_yaml

    path = models.resolve_model(base)
    # peft draws A from the global generator: seed before it, or A depends on what ran earlier in the worker
    torch.manual_seed(seed)
    model = get_peft_model(models.load_model(path), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # B starts at zero; make the adapter change outputs
    model.save_pretrained(root / "adapter")
    models.load_tokenizer(path).save_pretrained(root / "adapter")
    (root / "config.yaml").write_text(config_to_yaml(RunConfig(model=ModelConfig(name=base))))
    return root
