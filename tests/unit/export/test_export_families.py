"""`lorakit export` across the conformance matrix's families, as docs/models.md's "GGUF export" column
says: a family marked exportable is written exactly (run by a real llama.cpp in
test_export_families_llama_cpp.py; Qwen2 here and Qwen3 and Llama/SmolLM2 in test_export_roundtrip.py
also through transformers' GGUF loader), every other one is refused in one line with nothing written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "conformance"))
from families import BY_NAME, FAMILIES, SMALL  # noqa: E402

import lorakit  # noqa: E402
from lorakit.exporting.gguf_writer import export_refusal  # noqa: E402


def _config(family):
    return getattr(transformers, family.config)(**family.kwargs)


REFUSED = [f for f in FAMILIES if export_refusal(_config(f).to_dict())]


def test_the_column_marks_what_llama_cpp_runs():
    from test_export_families_llama_cpp import EXPORTED, RELEASED

    exportable = {f.name for f in FAMILIES} - {f.name for f in REFUSED}
    # each is run by llama.cpp; RELEASED's families are run with their released setting, which the
    # matrix's generic config lacks (so it is refused, below); + SmolLM2 (Llama) in test_export_llama_cpp.py
    assert exportable == set(EXPORTED) - set(RELEASED)
    assert {f.name for f in REFUSED} == {"qwen2-window", "mistral"} | set(RELEASED)


@pytest.mark.parametrize("family", REFUSED, ids=lambda f: f.name)
def test_other_families_are_refused_in_one_line_and_nothing_is_written(tmp_path, family):
    _config(family).save_pretrained(tmp_path / "model")
    with pytest.raises(lorakit.LorakitError) as e:
        lorakit.export(tmp_path / "model", tmp_path / "out")
    assert "\n" not in str(e.value) and "export" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_qwen2_round_trips_through_transformers_gguf_loader(tmp_path, lorakit_cache):
    """A tiny random Qwen2 (qkv bias) with the Qwen BPE vocabulary (cut to its first tokens, as in the
    llama.cpp family test): the f16 GGUF read back by transformers gives the logits of the weights rounded
    to float16."""
    from test_export_families_llama_cpp import cut_tokenizer
    from transformers import AutoTokenizer

    from lorakit.models.builtin import qwen3_tokenizer_dir

    tok = AutoTokenizer.from_pretrained(cut_tokenizer(Path(qwen3_tokenizer_dir(lorakit_cache)), tmp_path / "tok"))
    config = transformers.Qwen2Config(
        **dict(SMALL, vocab_size=len(tok), bos_token_id=None, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
    )
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())  # the weights an f16 file holds exactly
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    out = lorakit.export(tmp_path / "model", tmp_path / "gguf", quant="f16", quality_tokens=0)  # measured elsewhere
    path = next(out.glob("*.gguf"))
    back = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32, config=config
    ).eval()
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "你好，今天天气如何？"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, model(ids).logits, rtol=1e-4, atol=1e-5)


def test_gpt_oss_is_refused_where_llama_cpp_hard_codes_otherwise():
    """llama.cpp's gpt-oss graph rounds YaRN's correction range, takes YaRN's attention factor from the
    scale factor and fixes the SwiGLU slope and clamp: a config that says otherwise is refused."""
    config = _config(BY_NAME["gpt-oss"]).to_dict()
    rounded = {**config["rope_parameters"], "truncate": True}
    assert "truncate false" in export_refusal(config)
    assert export_refusal({**config, "rope_parameters": rounded}) is None
    assert "attention_factor" in export_refusal({**config, "rope_parameters": {**rounded, "attention_factor": 2.0}})
    assert "swiglu_limit" in export_refusal({**config, "rope_parameters": rounded, "swiglu_limit": 5.0})
