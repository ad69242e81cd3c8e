"""The vLLM launcher: command line, rank mapping, pre-flight checks; and the serve flags' parsing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lorakit.cli.serve import parse_lora_modules, serve_command
from lorakit.errors import LorakitError
from lorakit.serve.vllm import adapter_rank, build_vllm_command, preflight, run_vllm, vllm_rank


def model_dir(root: Path, tokenizer: bool = True, model_type: str = "qwen3") -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": model_type}))
    if tokenizer:
        (root / "tokenizer.json").write_text("{}")
    return root


def adapter(root: Path, r: int = 8, targets=("q_proj", "v_proj"), keys=None, **extra) -> Path:
    """A run directory with adapter/adapter_config.json (and weights named by `keys`)."""
    folder = root / "adapter"
    folder.mkdir(parents=True)
    meta = {"peft_type": "LORA", "r": r, "target_modules": list(targets), "base_model_name_or_path": "base", **extra}
    (folder / "adapter_config.json").write_text(json.dumps(meta))
    if keys:
        from safetensors.torch import save_file

        save_file({k: torch.zeros(1) for k in keys}, str(folder / "adapter_model.safetensors"))
    return root


def test_merged_folder_command(tmp_path):
    merged = model_dir(tmp_path / "merged", model_type="llama")
    cmd = build_vllm_command(merged, {}, "persona", "127.0.0.1", 8000, max_model_len=8192)
    assert cmd == [
        "vllm",
        "serve",
        str(merged),
        "--served-model-name",
        "persona",
        "--host",
        "127.0.0.1",
        "--port",
        "8000",
        "--max-model-len",
        "8192",
    ]


def test_base_plus_adapters_command(tmp_path):
    base = model_dir(tmp_path / "base")
    a = adapter(tmp_path / "a", r=8) / "adapter"
    b = adapter(tmp_path / "b", r=12, rank_pattern={"q_proj": 24}) / "adapter"
    assert adapter_rank(b) == 24
    cmd = build_vllm_command(base, {"a": a, "b": b}, "qwen", "0.0.0.0", 9000, api_key="k", dtype="bfloat16")
    joined = " ".join(cmd)
    assert "--enable-lora --max-lora-rank 32 --max-loras 2" in joined
    assert cmd[-3:] == ["--lora-modules", f"a={a}", f"b={b}"]
    assert "--reasoning-parser qwen3" in joined and "--api-key k" in joined and "--dtype bfloat16" in joined


@pytest.mark.parametrize("rank,expected", [(1, 8), (8, 8), (9, 16), (300, 320), (512, 512)])
def test_vllm_rank(rank, expected):
    assert vllm_rank(rank) == expected


def test_preflight_finds_what_vllm_rejects(tmp_path):
    base = model_dir(tmp_path / "base", tokenizer=False)
    bad = {
        "big": adapter(tmp_path / "big", r=1024) / "adapter",
        "head": adapter(tmp_path / "head", targets=["q_proj", "lm_head"]) / "adapter",
        "emb": adapter(tmp_path / "emb", modules_to_save=["embed_tokens"]) / "adapter",
        "weights": adapter(
            tmp_path / "w", targets="all-linear", keys=["base_model.model.model.embed_tokens.lora_A.weight"]
        )
        / "adapter",
        "dora": adapter(tmp_path / "dora", use_dora=True) / "adapter",
        "ok": adapter(tmp_path / "ok", r=16) / "adapter",
    }
    problems = preflight(base, bad)
    text = "\n".join(problems)
    assert "no tokenizer files" in text
    assert "adapter big: rank 1024" in text and "adapter head: trains lm_head" in text
    assert "adapter emb: trains embed_tokens" in text and "adapter weights: trains embed_tokens" in text
    assert "adapter dora: DoRA" in text and "adapter ok" not in text
    assert len(problems) == 6


def test_run_vllm_print_and_missing_vllm(tmp_path, capsys, monkeypatch):
    base = model_dir(tmp_path / "base")
    run = adapter(tmp_path / "run", r=16, keys=["w"])  # a complete adapter: weights included
    run_vllm(str(base), {"persona": str(run)}, None, "127.0.0.1", 8000, None, None, "auto", print_command=True)
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("vllm serve ") and f"persona={run / 'adapter'}" in printed and "\n" not in printed
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(LorakitError, match="vLLM is not installed"):
        run_vllm(str(base), {}, "m", "127.0.0.1", 8000, None, None, "auto", print_command=False)
    with pytest.raises(LorakitError, match="vLLM would reject this: adapter big: rank 1024"):
        run_vllm(
            str(base),
            {"big": str(adapter(tmp_path / "big", r=1024, keys=["w"]))},
            None,
            "127.0.0.1",
            8000,
            None,
            None,
            "auto",
            print_command=True,
        )


def test_lora_module_flags():
    assert parse_lora_modules(["a=runs/a", " b = runs/b "]) == {"a": "runs/a", "b": "runs/b"}
    for bad in (["a"], ["=x"], ["a="], ["a=x", "a=y"]):
        with pytest.raises(LorakitError):
            parse_lora_modules(bad)
    with pytest.raises(LorakitError, match="--model"):
        serve_command(model=None, lora_modules=None)
    with pytest.raises(LorakitError, match="--engine vllm"):
        serve_command(model="m", print_command=True)


def test_tool_and_reasoning_parsers_follow_the_template(tmp_path, capsys):
    """A Qwen3 folder (its real template) gets hermes + qwen3; a Qwen2.5-like one hermes only; a template
    without Hermes blocks no tool flags. The printed command shows them."""
    from lorakit.models import resolve_model

    qwen3 = tmp_path / "qwen3"
    shutil.copytree(resolve_model("qwen3-tiny-random"), qwen3, ignore=shutil.ignore_patterns("*.safetensors"))
    run_vllm(str(qwen3), {}, "q", "127.0.0.1", 8000, None, None, "auto", print_command=True)
    printed = capsys.readouterr().out
    assert "--enable-auto-tool-choice --tool-call-parser hermes --reasoning-parser qwen3" in printed
    qwen25 = model_dir(tmp_path / "qwen25", model_type="qwen2")
    named = [{"name": "default", "template": "x"}, {"name": "tool_use", "template": "<tool_call></tool_call>"}]
    (qwen25 / "tokenizer_config.json").write_text(json.dumps({"chat_template": named}))
    flags = ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
    assert build_vllm_command(qwen25, {}, "q", "h", 1)[-3:] == flags
    llama = model_dir(tmp_path / "llama", model_type="llama")
    (llama / "chat_template.jinja").write_text("{{ '<|python_tag|>' }}")
    assert "--tool-call-parser" not in build_vllm_command(llama, {}, "l", "h", 1)


def test_adapter_trained_with_a_replacement_template_is_served_with_it(tmp_path):
    """model.chat_template: SmolLM2-like base without tool support, adapter saved with the shipped tool
    template. vLLM must render with the adapter's template (else the prompts differ from training), and
    the tool parser follows that template; two adapters with different templates are refused."""
    from lorakit.models.template_override import SHIPPED

    base = model_dir(tmp_path / "base", model_type="llama")
    (base / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    plain = adapter(tmp_path / "plain", r=8) / "adapter"
    (plain / "chat_template.jinja").write_text((base / "chat_template.jinja").read_text())
    assert "--chat-template" not in build_vllm_command(base, {"p": plain}, "m", "h", 1)
    tools = adapter(tmp_path / "tools", r=8) / "adapter"
    (tools / "chat_template.jinja").write_text(SHIPPED["smollm2-tools"].read_text())
    cmd = build_vllm_command(base, {"t": tools, "p": plain}, "m", "h", 1)
    at = cmd.index("--chat-template")
    assert cmd[at + 1] == str(tools / "chat_template.jinja")
    assert cmd[at + 2 : at + 5] == ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
    other = adapter(tmp_path / "other", r=8) / "adapter"
    (other / "chat_template.jinja").write_text("{{ 'x' }}")
    with pytest.raises(LorakitError, match="different chat templates"):
        build_vllm_command(base, {"t": tools, "o": other}, "m", "h", 1)
