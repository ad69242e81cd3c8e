"""How lorakit picks its training paths (by what a model computes), the line it prints, the refusals for
models it cannot train, and docs/models.md's table kept equal to what the matrix runs."""

from __future__ import annotations

import pytest
import torch
import transformers
from families import BY_NAME, build

from lorakit.config import LoraConfig
from lorakit.errors import LorakitError
from lorakit.models import load_model
from lorakit.models.lora import attach_lora
from lorakit.training import fastpaths
from lorakit.training.attention import NAME


def chosen(name: str, mode: str = "auto", **config_changes):
    model = build(BY_NAME[name])
    for k, v in config_changes.items():
        setattr(model.config, k, v)
    lora = attach_lora(model, LoraConfig())
    choice = fastpaths.choose(lora, mode=mode)
    fastpaths.apply(lora, choice, use_fused=True)
    return lora, choice


def test_the_line_names_every_feature_the_fast_paths_compute():
    model, choice = chosen("gemma2")
    assert choice.packed and model.config._attn_implementation == NAME
    line = choice.line()
    assert line.startswith("attention: lorakit packed (sliding window 16, softcap 2)"), line
    assert "final softcap 3" in line and "\n" not in line
    assert "rmsnorm" not in line and "swiglu" not in line  # (1 + w) norms and GELU keep their own forwards
    assert "attention sinks" in chosen("gpt-oss")[1].line()
    assert "scale 0.25" in chosen("granite")[1].line()  # 1 / logits_scaling
    plain = chosen("qwen3")[1].line()
    assert plain.startswith("attention: lorakit packed;") and "swiglu x2" in plain and "rmsnorm x9" in plain


def test_qwen2_without_use_sliding_window_has_no_window():
    assert "window" not in chosen("qwen2")[1].line()
    assert "sliding window 16" in chosen("qwen2-window")[1].line()


@pytest.mark.parametrize(
    "attr,value,what",
    [("attention_chunk_size", 8, "chunked attention"), ("position_embedding_type", "alibi", "ALiBi position bias")],
)
def test_attention_packed_attention_does_not_compute_falls_back(attr, value, what):
    model, choice = chosen("llama3", **{attr: value})
    assert not choice.packed and not choice.share_prefix
    assert choice.line().startswith(f"attention: transformers sdpa fallback: {what}")
    assert model.config._attn_implementation == "sdpa"


def test_a_model_refusing_sdpa_falls_back_to_eager():
    model, choice = chosen("gemma2", mode="fallback")
    assert choice.line().startswith("attention: transformers eager fallback: train.attention=fallback")
    assert model.config._attn_implementation == "eager"


def test_attention_packed_refuses_a_model_packed_attention_does_not_compute():
    """train.attention=packed never falls back silently: a model it cannot run, or padded batches, stop."""
    with pytest.raises(LorakitError, match="train.attention: packed: chunked attention; set train.attention=auto"):
        chosen("llama3", mode="packed", attention_chunk_size=8)
    lora = attach_lora(build(BY_NAME["qwen3"]), LoraConfig())
    with pytest.raises(LorakitError, match="train.packing is off"):
        fastpaths.choose(lora, packing=False, mode="packed")
    assert chosen("qwen3", mode="packed")[1].packed


def test_gemma2_loads_with_eager_attention_instead_of_failing(tmp_path):
    build(BY_NAME["gemma2"]).save_pretrained(tmp_path)
    assert load_model(tmp_path, dtype="float32").config._attn_implementation == "eager"


@pytest.mark.parametrize(
    "config,what",
    [
        (
            lambda: transformers.T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2),
            "t5 is an encoder-decoder model; lorakit trains decoder-only causal LMs",
        ),
        (
            lambda: transformers.LlavaConfig(),
            "llava is a vision/audio-language model and lorakit has no text-only path",
        ),
        (lambda: transformers.ViTConfig(), "vit has no causal-LM class in transformers"),
    ],
)
def test_models_lorakit_cannot_train_are_refused_in_one_line(tmp_path, config, what):
    config().save_pretrained(tmp_path)
    with pytest.raises(LorakitError) as e:
        load_model(tmp_path)
    assert what in str(e.value) and "\n" not in str(e.value)


def test_a_tokenizer_without_a_chat_template_is_refused_in_one_line(tmp_path):
    from test_matrix import word_tokenizer

    from lorakit.data.conversation import Conversation, Message
    from lorakit.data.template import tokenize_conversation

    tok = word_tokenizer(tmp_path)
    conv = Conversation([Message("user", "t5 t6"), Message("assistant", "t7")], source="x.json:1")
    with pytest.raises(LorakitError, match="has no chat template") as e:
        tokenize_conversation(tok, conv)
    assert "\n" not in str(e.value)


def test_packed_attention_window_and_softcap_change_the_result():
    """The features are live in the matrix's models: dropping either changes the loss (so equality there
    is not vacuous)."""
    from test_matrix import SAMPLES

    from lorakit.training import batching, loss

    def value(attr=None):
        model, _ = chosen("gemma2")
        for layer in model.get_base_model().model.layers:
            if attr:
                setattr(layer.self_attn, attr, None)
        with torch.no_grad():
            return float(loss.summed_loss(model, batching.pack(SAMPLES, share_prefix=True)))

    base = value()
    assert abs(value("sliding_window") - base) > 1e-4 * base
    assert abs(value("attn_logit_softcapping") - base) > 1e-4 * base
    model, _ = chosen("gemma2", final_logit_softcapping=None)
    with torch.no_grad():
        uncapped = float(loss.summed_loss(model, batching.pack(SAMPLES, share_prefix=True)))
    assert abs(uncapped - base) > 1e-4 * base


def test_docs_models_md_holds_the_generated_table():
    import table

    assert table.current() == table.block(), "docs/models.md is stale: run python tests/conformance/table.py --write"
