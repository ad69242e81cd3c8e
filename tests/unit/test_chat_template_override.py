"""model.chat_template: a template file (or a shipped one) replaces the model's own in training, and the
adapter carries it to the engine (chat, serve, eval) and to merge. SmolLM2's real tokenizer, whose own
template cannot render tools, learns them through the shipped smollm2-tools template."""

import json
import sys
from pathlib import Path

import pytest

from lorakit.config import load_config
from lorakit.data.template import check_tool_support
from lorakit.errors import LorakitError
from lorakit.models import load_tokenizer, resolve_model
from lorakit.models.chat_template import CHATML_TEMPLATE
from lorakit.models.loading import load_tokenizer_from
from lorakit.models.template_override import SHIPPED, apply_chat_template, saved_chat_template, use_adapter_template

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_runs import make_run  # noqa: E402

ASSETS = Path(__file__).resolve().parents[2] / "src" / "lorakit" / "assets" / "tools"
MARKED = CHATML_TEMPLATE + "{#- marked -#}"


@pytest.fixture(scope="module")
def smollm2():
    return lambda: load_tokenizer(resolve_model("smollm2-135m-instruct"))


def test_relative_path_is_anchored_to_the_config_and_a_name_is_kept(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "t.jinja").write_text(CHATML_TEMPLATE)
    (tmp_path / "a.yaml").write_text("model:\n  chat_template: sub/t.jinja\n")
    (tmp_path / "b.yaml").write_text("model:\n  chat_template: smollm2-tools\n")
    assert load_config(tmp_path / "a.yaml").model.chat_template == str(tmp_path / "sub" / "t.jinja")
    assert load_config(tmp_path / "b.yaml").model.chat_template == "smollm2-tools"
    assert load_config(None).model.chat_template is None  # unset: the model's own template


@pytest.mark.parametrize(
    "value, content, message",
    [
        ("missing.jinja", None, "model.chat_template: {dir}/missing.jinja: no such file"),
        ("qwen-tools", None, "model.chat_template: 'qwen-tools' is not a template shipped with lorakit"),
        ("bad.jinja", "line one\n{% if x %}never closed", "model.chat_template: {dir}/bad.jinja:2: not a Jinja"),
        ("empty.jinja", " \n", "model.chat_template: {dir}/empty.jinja: the file is empty"),
    ],
)
def test_unusable_templates_are_one_line_errors_naming_the_field(tmp_path, smollm2, value, content, message):
    if content is not None:
        (tmp_path / value).write_text(content)
    with pytest.raises(LorakitError) as e:
        apply_chat_template(smollm2(), value if "." not in value else str(tmp_path / value))
    assert str(e.value).startswith(message.format(dir=tmp_path)) and "\n" not in str(e.value)


def test_shipped_template_teaches_smollm2_tools_and_renders_plain_chats_as_its_own(smollm2):
    own = smollm2()
    with pytest.raises(LorakitError, match="cannot train on tool conversations"):
        check_tool_support(own)
    tools = apply_chat_template(smollm2(), "smollm2-tools")
    check_tool_support(tools)  # renders the tool list and the calls
    for messages in (
        [{"role": "user", "content": "Hi"}],
        [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
    ):  # noqa: E501
        for prompt in (True, False):
            kw = dict(tokenize=False, add_generation_prompt=prompt)
            assert tools.apply_chat_template(messages, **kw) == own.apply_chat_template(messages, **kw)
    assert tools.chat_template == SHIPPED["smollm2-tools"].read_text()


def test_a_template_without_tools_is_still_refused(tmp_path, smollm2):
    (tmp_path / "plain.jinja").write_text(CHATML_TEMPLATE)
    with pytest.raises(LorakitError, match="cannot train on tool conversations: the template never reads `tools`"):
        check_tool_support(apply_chat_template(smollm2(), str(tmp_path / "plain.jinja")))


def test_plan_renders_tool_data_with_the_replacement_only(tmp_path):
    from lorakit.training.plan import plan_run

    data = tmp_path / "tools.jsonl"
    data.write_text("".join((ASSETS / "train.jsonl").read_text().splitlines(keepends=True)[:3]))
    args = ["model.name=smollm2-135m-instruct", f"data.path={data}", f"train.output_dir={tmp_path / 'run'}"]
    with pytest.raises(LorakitError, match="smollm2.*cannot train on tool conversations"):
        plan_run(load_config(None, args))
    assert plan_run(load_config(None, [*args, "model.chat_template=smollm2-tools"])).train_samples == 3


def test_engine_and_merge_take_the_template_the_adapter_was_trained_with(tmp_path):
    import lorakit
    from lorakit.inference.engine import Engine

    marked = make_run(tmp_path / "run", "qwen3-tiny-random", seed=2)
    own = saved_chat_template(marked / "adapter")  # trained without model.chat_template: the base's own
    assert Engine.load(None, {"a": str(marked)}).tokenizer.chat_template == own
    tok = load_tokenizer_from(marked / "adapter")
    tok.chat_template = MARKED
    tok.save_pretrained(marked / "adapter")
    assert Engine.load(None, {"a": str(marked)}).tokenizer.chat_template == MARKED
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "chat_template.jinja").write_text("{{ messages }}")
    with pytest.raises(LorakitError, match="trained with different chat templates"):
        use_adapter_template(
            load_tokenizer(resolve_model("qwen3-tiny-random")), [marked / "adapter", tmp_path / "other"]
        )
    out = lorakit.merge(marked, tmp_path / "merged")
    assert saved_chat_template(out) == MARKED and json.loads((out / "config.json").read_text())
