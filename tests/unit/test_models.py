"""lorakit.models: the offline Qwen3 tokenizer and chat template, the built-in models, resolve errors."""

import hashlib
import json
import random
import unicodedata

import pytest
import torch

from lorakit.errors import LorakitError
from lorakit.models import BUILTIN_MODELS, cache_root, download, load_model, load_tokenizer, resolve_model
from lorakit.models.builtin import _qwen3_param_shapes, qwen3_config
from lorakit.models.qwen_tokenizer import ADDED_TOKENS, read_tiktoken, tiktoken_path


@pytest.fixture(scope="module")
def tiny_dir():
    return resolve_model("qwen3-tiny-random")


@pytest.fixture(scope="module")
def qwen_tok(tiny_dir):
    return load_tokenizer(tiny_dir)


@pytest.fixture(scope="module")
def ranks():
    return read_tiktoken(tiktoken_path())


# ---------------------------------------------------------------- Qwen3 tokenizer


def test_qwen_tokenizer_size_and_special_tokens(qwen_tok):
    assert len(qwen_tok) == 151669
    assert qwen_tok.eos_token == "<|im_end|>" and qwen_tok.eos_token_id == 151645
    assert qwen_tok.pad_token == "<|endoftext|>" and qwen_tok.pad_token_id == 151643
    assert qwen_tok.bos_token is None and qwen_tok.unk_token is None
    for i, (content, _) in enumerate(ADDED_TOKENS):
        assert qwen_tok.convert_tokens_to_ids(content) == 151643 + i
    assert qwen_tok.convert_tokens_to_ids("<think>") == 151667
    assert qwen_tok.convert_tokens_to_ids("</think>") == 151668
    assert qwen_tok.convert_tokens_to_ids("<tool_call>") == 151657
    # No BOS is prepended: the ids are exactly the text's tokens.
    assert qwen_tok("<|im_start|>")["input_ids"] == [151644]


def test_qwen_tokenizer_exact_ids(qwen_tok, ranks):
    # "Hello" and " world" are single vocabulary entries (byte-level spelling "Ġworld").
    assert qwen_tok("Hello world")["input_ids"] == [ranks[b"Hello"], ranks[b" world"]] == [9707, 1879]
    ids = qwen_tok("<|im_start|>user\n你是谁？<|im_end|>\n")["input_ids"]
    expected = [151644, ranks[b"user"], ranks[b"\n"], ranks["你是".encode()], ranks["谁".encode()],
                ranks["？".encode()], 151645, ranks[b"\n"]]  # fmt: skip
    assert ids == expected == [151644, 872, 198, 105043, 100165, 11319, 151645, 198]
    # Digits are split one by one by the pre-tokenizer.
    assert qwen_tok("2024")["input_ids"] == [ranks[b"2"], ranks[b"0"], ranks[b"2"], ranks[b"4"]]


@pytest.mark.parametrize(
    "text",
    ["<|im_start|>user\n你是谁？<|im_end|>\n", "def f(x):\n    return x ** 2  # ok\r\n", "It's 😀 café, I'VE DONE'LL.",
     "<think>\n推理\n</think>\n\n答案<|endoftext|>", "   \n\n\t tabs and spaces   "],
)  # fmt: skip
def test_qwen_tokenizer_round_trip(qwen_tok, text):
    assert qwen_tok.decode(qwen_tok(text)["input_ids"]) == text


def test_qwen_tokenizer_single_tokens_encode_to_their_rank(qwen_tok, ranks):
    backend = qwen_tok.backend_tokenizer
    sample = random.Random(0).sample(sorted(ranks.items(), key=lambda kv: kv[1]), 2000)
    checked = 0
    for token_bytes, rank in sample:
        try:
            text = token_bytes.decode("utf-8")
        except UnicodeDecodeError:
            continue  # a fragment of a multi-byte character cannot be given as text
        # Tokens that NFC changes or that the split regex cuts apart (e.g. Thai marks, full-width
        # digit pairs) are never produced from their own text, by the official tokenizer either.
        if unicodedata.normalize("NFC", text) != text or len(backend.pre_tokenizer.pre_tokenize_str(text)) != 1:
            continue
        assert backend.encode(text, add_special_tokens=False).ids == [rank], (text, rank)
        checked += 1
    assert checked > 1800


def test_qwen_tokenizer_skip_special_keeps_think_tags(qwen_tok):
    ids = qwen_tok("<|im_start|>assistant\n<think>\nx\n</think>\n\ny<|im_end|>")["input_ids"]
    assert qwen_tok.decode(ids, skip_special_tokens=True) == "assistant\n<think>\nx\n</think>\n\ny"


# ---------------------------------------------------------------- Qwen3 chat template

SYS_USER = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]


def render(tok, messages, **kw):
    return tok.apply_chat_template(messages, tokenize=False, **kw)


def test_template_single_turn_non_thinking_sample(qwen_tok):
    msgs = SYS_USER + [{"role": "assistant", "content": "A"}]
    assert render(qwen_tok, msgs) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\nA<|im_end|>\n"
    )


def test_template_no_default_system(qwen_tok):
    assert render(qwen_tok, [{"role": "user", "content": "hi"}]) == "<|im_start|>user\nhi<|im_end|>\n"


def test_template_generation_prompt(qwen_tok):
    base = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    assert render(qwen_tok, SYS_USER, add_generation_prompt=True) == base
    assert render(qwen_tok, SYS_USER, add_generation_prompt=True, enable_thinking=True) == base
    assert render(qwen_tok, SYS_USER, add_generation_prompt=True, enable_thinking=False) == (
        base + "<think>\n\n</think>\n\n"
    )


def test_template_multi_turn_drops_earlier_think_blocks(qwen_tok):
    msgs = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "<think>\nr1\n</think>\n\na1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "<think>\nr2\n</think>\n\na2"},
    ]
    assert render(qwen_tok, msgs) == (
        "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"
        "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n<think>\nr2\n</think>\n\na2<|im_end|>\n"
    )


def test_template_reasoning_content(qwen_tok):
    msgs = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1", "reasoning_content": "old"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2", "reasoning_content": "step 1\nstep 2"},
    ]
    assert render(qwen_tok, msgs) == (
        "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"
        "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n<think>\nstep 1\nstep 2\n</think>\n\na2<|im_end|>\n"
    )
    empty = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": ""}]
    assert render(qwen_tok, empty).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\na<|im_end|>\n")


def test_template_tools(qwen_tok):
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    msgs = [
        {"role": "user", "content": "1+2?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "add", "arguments": {"a": 1}}}]},
        {"role": "tool", "content": "3"},
    ]
    text = render(qwen_tok, msgs, tools=[tool], add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\n# Tools\n") and "<tools>\n{" in text
    assert '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call><|im_end|>\n' in text
    assert text.endswith("<|im_start|>user\n<tool_response>\n3\n</tool_response><|im_end|>\n<|im_start|>assistant\n")


# ---------------------------------------------------------------- built-in models


def _weights_digest(folder) -> str:
    from safetensors.torch import load_file

    state = load_file(str(folder / "model.safetensors"))
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def test_builtin_names():
    assert set(BUILTIN_MODELS) == {"qwen3-tiny-random", "qwen3-0.6b-random", "qwen3-4b-random", "smollm2-135m-instruct"}


def test_tiny_is_cached_and_loads(tiny_dir):
    from transformers import AutoModelForCausalLM, GenerationConfig

    assert tiny_dir == cache_root() / "models" / "qwen3-tiny-random"
    assert resolve_model("qwen3-tiny-random") == tiny_dir  # second call reuses the folder
    cfg = json.loads((tiny_dir / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"], cfg["tie_word_embeddings"]) == (
        64,
        2,
        151936,
        True,
    )
    model = AutoModelForCausalLM.from_pretrained(str(tiny_dir))
    with torch.no_grad():
        logits = model(torch.tensor([[151644, 872, 198]])).logits
    assert logits.shape == (1, 3, 151936) and torch.isfinite(logits).all()
    gen = GenerationConfig.from_pretrained(str(tiny_dir))
    assert gen.eos_token_id == [151645, 151643] and gen.pad_token_id == 151643
    assert (gen.temperature, gen.top_p, gen.top_k, gen.do_sample) == (0.6, 0.95, 20, True)


def test_tiny_build_is_deterministic(tiny_dir, tmp_path):
    again = resolve_model("qwen3-tiny-random", cache_dir=str(tmp_path))
    assert again == tmp_path / "models" / "qwen3-tiny-random"
    assert _weights_digest(again) == _weights_digest(tiny_dir)


def test_load_model_dtypes(tiny_dir):
    assert load_model(tiny_dir).dtype == torch.float32  # auto on CPU
    model = load_model(tiny_dir, dtype="bf16")
    assert model.dtype == torch.bfloat16 and not model.training
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(LorakitError, match="unknown dtype"):
        load_model(tiny_dir, dtype="int3")


@pytest.mark.parametrize("name, params", [("qwen3-0.6b-random", 596_049_920), ("qwen3-4b-random", 4_022_468_096)])
def test_big_random_shapes(name, params):
    # Checked without building: parameter count of the real checkpoints (tied embeddings counted once).
    config = qwen3_config(name)
    shapes = _qwen3_param_shapes(config)
    assert sum(torch.Size(s).numel() for s in shapes.values()) == params


def test_smollm2_builtin_answers(lorakit_cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_model("smollm2-135m-instruct")
    assert not (folder / "config.json").read_text().count("quantization_config")
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    assert tok.eos_token == "<|im_end|>" and "<|im_start|>" in tok.chat_template
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)  # fmt: skip
    out = model.generate(**prompt, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_concurrent_builds_run_once(tmp_path, monkeypatch):
    import threading
    import time

    from lorakit.models import builtin

    calls = []

    def slow_build(out, cache, name):
        calls.append(name)
        time.sleep(0.3)  # long enough that the second caller arrives while the first still builds
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(builtin, "_build_qwen3_random", slow_build)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(resolve_model("qwen3-4b-random", cache_dir=str(tmp_path))))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["qwen3-4b-random"]
    assert results == [tmp_path / "models" / "qwen3-4b-random"] * 2
    # Nothing half-built is left next to the finished folder.
    assert sorted(p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")) == [
        "qwen3-4b-random"
    ]


# ---------------------------------------------------------------- resolve / download errors


def test_resolve_missing_local_folder(tmp_path):
    with pytest.raises(LorakitError, match="does not exist"):
        resolve_model(str(tmp_path / "nope" / "model"))


def test_resolve_folder_without_config(tmp_path):
    with pytest.raises(LorakitError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_resolve_local_folder_is_itself(tiny_dir):
    assert resolve_model(str(tiny_dir)) == tiny_dir


def test_resolve_hub_id_not_downloaded(tmp_path):
    with pytest.raises(LorakitError, match=r"run `lorakit download someorg/missing-model` first") as err:
        resolve_model("someorg/missing-model", cache_dir=str(tmp_path))
    assert "\n" not in str(err.value)
    with pytest.raises(LorakitError, match="--source modelscope"):
        resolve_model("someorg/missing-model", source="modelscope", cache_dir=str(tmp_path))


def test_resolve_hub_id_after_download(tmp_path):
    folder = tmp_path / "hub" / "hf" / "someorg" / "m"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / ".lorakit-download.json").write_text('{"id": "someorg/m", "source": "hf"}')
    assert resolve_model("someorg/m", cache_dir=str(tmp_path)) == folder


def test_download_rejects_bad_source_and_ids(tmp_path):
    with pytest.raises(LorakitError, match="unknown model source"):
        download("someorg/m", source="ftp", cache_dir=str(tmp_path))
    with pytest.raises(LorakitError, match="not a hub id"):
        download("not a model", cache_dir=str(tmp_path))


def test_download_builtin_builds_locally(tiny_dir):
    assert download("qwen3-tiny-random") == tiny_dir


def test_cache_root(monkeypatch, tmp_path):
    assert cache_root(str(tmp_path)) == tmp_path
    monkeypatch.setenv("LORAKIT_CACHE", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "x"
    monkeypatch.delenv("LORAKIT_CACHE")
    assert cache_root().parts[-2:] == (".cache", "lorakit")
