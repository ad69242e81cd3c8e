"""What K-quants and adapter exports refuse: one line that says what to do, before anything is written."""

from __future__ import annotations

import json
import shutil

import pytest

from lorakit.errors import LorakitError
from lorakit.exporting import export_model
from lorakit.exporting.quantize import LIB_ENV, find_quantizer


def _refused(out, says, **kwargs):
    with pytest.raises(LorakitError) as info:
        export_model(kwargs.pop("source", "qwen3-tiny-random"), out, **kwargs)
    message = str(info.value)
    assert says in message and "\n" not in message, message
    assert not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    return message


@pytest.mark.parametrize("quant", ["q4_k_m", "q5_k_m", "q6_k"])
def test_k_quant_without_the_library_says_what_to_install(tmp_path, monkeypatch, quant):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(LIB_ENV, str(tmp_path / "empty"))  # the lookup points at a place with nothing in it
    _refused(tmp_path / "out", "npm install -g @node-llama-cpp/linux-x64@3.22.1", quant=quant)


def test_the_pinned_library_is_found_and_checked():
    quantizer = find_quantizer()  # make install put it in tests/unit/export/llama_cpp/node_modules
    assert (quantizer.folder / "libllama.v0.5.0.so").is_file()


def test_another_build_is_refused(tmp_path, monkeypatch):
    """A copy of the libraries whose package.json names another version: its struct layout is unknown."""
    folder = find_quantizer().folder
    copy = tmp_path / "pkg" / "bins" / "linux-x64"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("*.node", "libggml-cpu-*"))
    (tmp_path / "pkg" / "package.json").write_text(json.dumps({"version": "3.99.0"}))
    monkeypatch.setenv(LIB_ENV, str(copy))
    with pytest.raises(LorakitError, match="3.99.0 is not the pinned 3.22.1"):
        find_quantizer()


def test_adapter_refusals(exports, tmp_path):
    exported = exports("qwen3-tiny-random")
    _refused(tmp_path / "out", "give a run directory or adapter folder", source=exported.merged, fmt="gguf-lora")
    _refused(tmp_path / "out", "--base-gguf: only with --format gguf-lora", base_gguf=tmp_path / "x.gguf")
    adapter = next(exported.adapter_folder().glob("*-lora.gguf"))
    _refused(tmp_path / "out", "not a qwen3 model", source=exported.run, fmt="gguf-lora", base_gguf=adapter)

    dora = tmp_path / "dora"
    shutil.copytree(exported.run, dora)
    config = json.loads((dora / "adapter" / "adapter_config.json").read_text())
    (dora / "adapter" / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    _refused(tmp_path / "out", "use_dora: llama.cpp's LoRA GGUF has no DoRA", source=dora, fmt="gguf-lora")


def test_adapter_on_moe_experts_is_refused_naming_the_module(tmp_path):
    """PEFT's all-linear adapts Qwen3-MoE's fused experts; llama.cpp's LoRA GGUF has no per-expert pairs."""
    import sys
    from pathlib import Path

    from peft import LoraConfig, get_peft_model

    from lorakit.exporting.adapter_gguf import write_adapter_gguf

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "conformance"))
    from families import BY_NAME, build

    model = build(BY_NAME["qwen3-moe"])
    get_peft_model(model, LoraConfig(r=2, target_modules="all-linear")).save_pretrained(tmp_path / "adapter")
    out = tmp_path / "lora.gguf"
    with pytest.raises(LorakitError, match=r"model\.layers\.0\.mlp\.experts: LoRA on MoE experts") as info:
        write_adapter_gguf(tmp_path / "adapter", model.config.to_dict(), out, "moe")
    assert "\n" not in str(info.value) and not out.exists()
