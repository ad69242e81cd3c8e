"""The Modelfile: its TEMPLATE, rendered as Ollama would (Go template subset, in Python), gives the HF chat
template's prompt; it stops on every end-of-turn token and carries lorakit chat's sampling defaults."""

from __future__ import annotations

import pytest

from lorakit.errors import LorakitError
from lorakit.exporting.gotemplate import TemplateError, render
from lorakit.exporting.modelfile import SAMPLING_DEFAULTS, build_modelfile, hf_prompt, ollama_messages

TWO_TURNS = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "Captain Tamsin."},
             {"role": "user", "content": "你住在哪里？\nTell me {{ twice }}."}]  # fmt: skip
SYSTEM = [{"role": "system", "content": "You keep the lighthouse."}]


def _template(modelfile: str) -> str:
    return modelfile.split('TEMPLATE """', 1)[1].split('"""', 1)[0]


@pytest.fixture(scope="module", params=["qwen3-tiny-random", "smollm2-135m-instruct"])
def tokenizer(request):
    from lorakit import models

    return models.load_tokenizer(models.resolve_model(request.param))


@pytest.mark.parametrize("messages", [TWO_TURNS, SYSTEM + TWO_TURNS, TWO_TURNS[:1]])
def test_template_renders_the_hf_prompt(tokenizer, messages):
    modelfile = build_modelfile(tokenizer, "m.gguf", ["<|im_end|>"])
    got = render(_template(modelfile), ollama_messages(messages))
    assert got == hf_prompt(tokenizer, messages)
    if "<think>" in tokenizer.get_vocab():  # Qwen3 with thinking off: the empty think block opens the answer
        assert got.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_modelfile_stops_and_sampling(tokenizer):
    text = build_modelfile(tokenizer, "m-q8_0.gguf", ["<|im_end|>", "<|endoftext|>"], system="Be Tamsin.")
    assert text.startswith("FROM ./m-q8_0.gguf\n")
    assert 'PARAMETER stop "<|im_end|>"' in text and 'PARAMETER stop "<|endoftext|>"' in text
    assert "PARAMETER temperature 0.7" in text and "PARAMETER top_p 0.8" in text
    assert 'SYSTEM """Be Tamsin."""' in text


def test_sampling_defaults_are_lorakit_chats():
    from lorakit.cli.chat import DEFAULTS

    assert SAMPLING_DEFAULTS == DEFAULTS["off"]


def test_non_chatml_template_gets_no_modelfile(tokenizer):
    original = tokenizer.chat_template
    try:
        tokenizer.chat_template = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
        assert build_modelfile(tokenizer, "m.gguf", []) is None
    finally:
        tokenizer.chat_template = original


def test_a_template_lorakit_cannot_mirror_is_refused(tokenizer):
    original = tokenizer.chat_template
    try:  # ChatML on the surface, but only the last two messages are kept: the Go TEMPLATE would differ
        tokenizer.chat_template = ("{% for m in messages[-2:] %}<|im_start|>{{ m.role }}\n{{ m.content }}"
                                   "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                                   "{% endif %}")  # fmt: skip
        with pytest.raises(LorakitError, match="TEMPLATE would render"):
            build_modelfile(tokenizer, "m.gguf", [])
    finally:
        tokenizer.chat_template = original


def test_go_template_subset():
    data = {"Messages": [{"Role": "user", "Content": "a"}, {"Role": "assistant", "Content": "b"}], "X": 2}
    assert render("{{- range $i, $m := .Messages }}{{ $i }}={{ $m.Role }};{{ end }}", data) == "0=user;1=assistant;"
    assert render("x  {{- if eq .X 2 -}}  two  {{- else }}other{{ end }}", data) == "xtwo"
    assert render('{{ if ne .X 2 }}a{{ else if and (eq .X 2) (not false) }}b{{ else }}c{{ end }}', data) == "b"  # noqa: E501  # fmt: skip
    assert render("{{ len (slice $.Messages 1) }}{{ $m := index .Messages 0 }}{{ $m.Role }}", data) == "1user"
    with pytest.raises(TemplateError):
        render("{{ range .Messages }}{{ end }}", data)
    with pytest.raises(TemplateError):
        render("{{ if .X }}never closed", data)
