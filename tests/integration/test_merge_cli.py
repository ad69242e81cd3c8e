"""`lorakit merge`: the merged folder loads with plain transformers and gives base+adapter's logits."""

from __future__ import annotations

import json

import torch
from lorakit_cli import alpaca_file, lorakit, write_config
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_merged_model_equals_base_plus_adapter(tmp_path):
    data = alpaca_file(tmp_path / "d.json", n=12)
    cfg = write_config(
        tmp_path / "c.yaml",
        model={"name": "qwen3-tiny-random"},
        data={"path": str(data)},
        lora={"r": 4, "alpha": 16},
        train={"output_dir": str(tmp_path / "run"), "max_steps": 3, "lr": 0.05, "precision": "fp32", "threads": 1},
    )
    lorakit("train", cfg)
    proc = lorakit("merge", tmp_path / "run", "--out", tmp_path / "merged")
    assert "deprecated" not in proc.stderr, proc.stderr  # peft's and transformers' noise stays out of the way
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    assert tok.eos_token == "<|im_end|>" and tok.chat_template

    from peft import PeftModel

    from lorakit.models import load_model, resolve_model

    base = load_model(resolve_model("qwen3-tiny-random"), dtype="float32")
    reference = PeftModel.from_pretrained(base, str(tmp_path / "run" / "adapter")).eval()
    ids = tok("<|im_start|>user\n你是谁？<|im_end|>\n<|im_start|>assistant\n", return_tensors="pt").input_ids
    with torch.no_grad():
        want = reference(ids).logits
        got = merged(ids).logits
        with reference.disable_adapter():
            bare = reference(ids).logits
    assert torch.allclose(got, want, atol=1e-4), float((got - want).abs().max())
    assert not torch.allclose(bare, want, atol=1e-3), "the adapter changed nothing; the test would prove nothing"

    import lorakit as api

    api.merge(tmp_path / "run", tmp_path / "merged-bf16", dtype="bfloat16")  # the public API the CLI calls
    assert json.loads((tmp_path / "merged-bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    half = AutoModelForCausalLM.from_pretrained(tmp_path / "merged-bf16")
    assert half.dtype == torch.bfloat16


def test_merge_refuses_to_overwrite_and_bad_run_dirs(tmp_path):
    (tmp_path / "out").mkdir()
    proc = lorakit("merge", tmp_path / "nowhere", "--out", tmp_path / "m", check=False)
    assert proc.returncode == 2 and "no such run directory" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = lorakit("merge", tmp_path / "empty", "--out", tmp_path / "m", check=False)
    assert proc.returncode == 2 and "adapter_config.json" in proc.stderr
    assert not (tmp_path / "m").exists()
