"""Shared, expensive fixtures of the export tests: each model is fine-tuned (a fake run), merged and exported
once per session, and the tests read the same folders."""

from __future__ import annotations

from pathlib import Path

import pytest

MODELS = ("qwen3-tiny-random", "smollm2-135m-instruct")


# The spread of LoRA B after the demo's real fine-tune of SmolLM2 (r 16, alpha 32, 93 steps): std 0.0055
# (benchmarks/export_agreement.py, docs/benchmarks.md "Export to GGUF").
LORA_B_STD = 0.0055


def persona_run(root: Path, base: str) -> Path:
    """A RUN_DIR whose adapter moves the weights as far as the demo's fine-tune does (LoRA B drawn with
    the spread measured there; A as peft initialises it, scale alpha/r = 2 as in the demo)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from lorakit import models
    from lorakit.config import ModelConfig, RunConfig, config_to_yaml

    path = models.resolve_model(base)
    torch.manual_seed(7)  # LoRA A is drawn by peft: seed before it, so every session tests the same adapter
    model = get_peft_model(models.load_model(path), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, LORA_B_STD)
    model.save_pretrained(root / "adapter")
    models.load_tokenizer(path).save_pretrained(root / "adapter")
    (root / "config.yaml").write_text(config_to_yaml(RunConfig(model=ModelConfig(name=base))))
    return root


class Exported:
    """One model's fake run, its float32 merge and its GGUF exports (by quant)."""

    def __init__(self, root: Path, base: str):
        from lorakit.exporting.merge import merge

        self.base = base
        self.run = persona_run(root / "run", base)
        self.merged = merge(self.run, root / "merged", dtype="float32")
        self.root = root
        self._folders: dict[str, Path] = {}

    def folder(self, quant: str) -> Path:
        """OUT of `lorakit export MERGED --quant QUANT`, written on first use (the quality measurement is
        skipped here: test_export_quality.py checks it once)."""
        from lorakit.exporting import export_model

        if quant not in self._folders:
            self._folders[quant] = export_model(self.merged, self.root / f"gguf-{quant}", quant=quant, quality_tokens=0)
        return self._folders[quant]

    def adapter_folder(self) -> Path:
        """OUT of `lorakit export RUN --format gguf-lora --quant f16`: the adapter GGUF beside the f16 base."""
        from lorakit.exporting import export_model

        if "lora" not in self._folders:
            self._folders["lora"] = export_model(
                self.run, self.root / "gguf-lora", fmt="gguf-lora", quant="f16", quality_tokens=0
            )
        return self._folders["lora"]

    def gguf(self, quant: str) -> Path:
        return next(self.folder(quant).glob("*.gguf"))


@pytest.fixture(scope="session")
def exports(tmp_path_factory):
    """base name -> Exported, built on first request and shared by every test of the session."""
    cache: dict[str, Exported] = {}

    def get(base: str) -> Exported:
        if base not in cache:
            cache[base] = Exported(tmp_path_factory.mktemp(base), base)
        return cache[base]

    return get


@pytest.fixture(scope="session", params=MODELS)
def exported(request, exports) -> Exported:
    return exports(request.param)
