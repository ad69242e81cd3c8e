"""Cheap checks of the GGUF writer's parts: refusals before any weight is read, the rotary row order,
and the pre-tokenizer names llama.cpp needs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lorakit.errors import LorakitError
from lorakit.exporting.gguf_writer import check_exportable, interleave_rotary_rows
from lorakit.exporting.vocab import _pre_tokenizer


def _config_dir(tmp_path, **config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_rotary_rows_are_what_transformers_gguf_loader_undoes():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.arange(6 * 8 * 4, dtype=np.float32).reshape(6 * 8, 4)  # 6 heads of 8 rows
    moved = interleave_rotary_rows(w, 6)
    assert not np.array_equal(moved, w)
    back = (
        LlamaTensorProcessor(config={"num_attention_heads": 6, "num_key_value_heads": 6})
        .process(moved, "blk.0.attn_q.weight")
        .weights
    )
    assert np.array_equal(back, w)


@pytest.mark.parametrize("config, quant, says", [
    ({"model_type": "qwen3"}, "q5_k", "--quant q5_k"),
    ({"model_type": "mamba"}, "f16", "model type 'mamba' cannot be exported"),
    ({"model_type": "qwen3", "num_hidden_layers": 2, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "f16",
     "RoPE type 'yarn' is not exported"),
])  # fmt: skip
def test_refusals_name_the_problem(tmp_path, config, quant, says):
    with pytest.raises(LorakitError, match=says):
        check_exportable(_config_dir(tmp_path, **config), quant)


def test_pre_tokenizer_names(tmp_path):
    from lorakit.models import resolve_model

    for model, name in (("qwen3-tiny-random", "qwen2"), ("smollm2-135m-instruct", "smollm")):
        spec = json.loads((resolve_model(model) / "tokenizer.json").read_text())
        assert _pre_tokenizer(spec, tmp_path) == name
    llama3 = {
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {
                        "Regex": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"  # noqa: E501
                    },
                }
            ],
        }
    }
    assert _pre_tokenizer(llama3, tmp_path) == "llama-bpe"
    with pytest.raises(LorakitError, match="pre-tokenizer"):
        _pre_tokenizer({"pre_tokenizer": {"type": "Metaspace"}}, tmp_path)


def test_the_array_writer_packs_the_bytes_the_gguf_package_does(tmp_path):
    """GGUFArrayWriter's one-go packing of the tokenizer arrays is byte for byte the package's own."""
    import gguf

    from lorakit.exporting.gguf_arrays import GGUFArrayWriter

    tokens = ["a", "Ġthe", "你好", "<|im_end|>", "ĊĊ", "é" * 40]
    ours = GGUFArrayWriter(tmp_path / "a.gguf", "qwen3")
    theirs = gguf.GGUFWriter(tmp_path / "b.gguf", "qwen3")
    for values, sub in ((tokens, gguf.GGUFValueType.STRING), ([1, 3, 6, -1, 2**31 - 1], gguf.GGUFValueType.INT32)):
        for add_vtype in (True, False):
            want = theirs._pack_val(values, gguf.GGUFValueType.ARRAY, add_vtype)  # the package infers the type
            assert ours._pack_val(values, gguf.GGUFValueType.ARRAY, add_vtype, sub_type=sub) == want
