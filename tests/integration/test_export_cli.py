"""`lorakit export` through the real CLI: a trained run becomes OUT/ with GGUF, Modelfile and model card;
bad input gets one line (exit 2) and leaves nothing behind."""

from __future__ import annotations

import json
import shutil

import gguf
import yaml
from lorakit_cli import alpaca_file, lorakit, write_config


def _front_matter(readme):
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---", 2)[1]), text


def _leftovers(parent, name):
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def test_run_to_gguf_with_modelfile_and_card(tmp_path):
    data = alpaca_file(tmp_path / "persona.json", n=10)
    cfg = write_config(tmp_path / "c.yaml", model={"name": "qwen3-tiny-random"},
                       data={"path": str(data), "system": "You are Zhen Huan."},
                       lora={"r": 4, "alpha": 8}, train={"output_dir": str(tmp_path / "run"), "max_steps": 2,
                                                        "precision": "fp32", "threads": 1})  # fmt: skip
    lorakit("train", cfg)
    proc = lorakit("export", tmp_path / "run", "--format", "gguf", "--out", tmp_path / "out", "--quant", "q8_0")
    assert "ollama create" in proc.stdout
    out = tmp_path / "out"
    files = sorted(p.name for p in out.iterdir())
    assert files == [".lorakit-output", "Modelfile", "README.md", "out-q8_0.gguf"], (
        files
    )  # the marker: lorakit wrote it
    reader = gguf.GGUFReader(out / "out-q8_0.gguf")
    assert reader.fields["general.architecture"].contents() == "qwen3"
    assert reader.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q8_0
    modelfile = (out / "Modelfile").read_text()
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and 'PARAMETER stop "<|endoftext|>"' in modelfile
    assert 'SYSTEM """You are Zhen Huan."""' in modelfile

    meta, card = _front_matter(out / "README.md")
    assert meta["base_model"] == "qwen3-tiny-random" and meta["license"] == "apache-2.0"
    assert "gguf" in meta["tags"]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert f"| steps | {run['steps']} |" in card
    assert "10 records, sha256 `" in card and str(data) in card
    assert "| LoRA rank / alpha | 4 / 8.0 |" in card
    for engine in ("llama-server", "ollama create", "gguf_file="):
        assert engine in card

    merged = tmp_path / "merged"
    lorakit("merge", tmp_path / "run", "--out", merged)
    meta, card = _front_matter(merged / "README.md")
    assert meta["base_model"] == "qwen3-tiny-random" and meta["library_name"] == "transformers"
    for engine in ("from_pretrained", "vllm serve", "lorakit export", "ollama create"):
        assert engine in card
    # A merged folder exported again keeps the training record of its card.
    lorakit("export", merged, "--out", tmp_path / "again", "--quant", "f16")
    _, again = _front_matter(tmp_path / "again" / "README.md")
    assert "10 records, sha256 `" in again and "## Run it" in again


def test_bad_input_is_one_line_and_leaves_nothing(tmp_path):
    def refused(*args, says, env=None):
        proc = lorakit("export", *args, check=False, env=env)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], proc.stderr
        assert not (tmp_path / "out").exists() and not _leftovers(tmp_path, "out")

    refused(tmp_path / "no-run", "--out", tmp_path / "out", says="no such run directory")
    refused("qwen3-tiny-random", "--out", tmp_path / "out", "--quant", "q3_k", says="--quant q3_k")
    (tmp_path / "nolib").mkdir()  # llama.cpp's quantizer looked for where there is none
    refused(
        "qwen3-tiny-random",
        "--out",
        tmp_path / "out",
        "--quant",
        "q4_k_m",
        says="npm install -g @node-llama-cpp/linux-x64@3.22.1",
        env={"LORAKIT_LLAMA_CPP_LIB": str(tmp_path / "nolib")},
    )
    refused("qwen3-tiny-random", "--out", tmp_path / "out", "--format", "onnx", says="--format onnx")

    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    refused(gpt2, "--out", tmp_path / "out", says="model type 'gpt2' cannot be exported")

    # Fails after the GGUF is written (its chat template cannot be mirrored in a Modelfile): no OUT at all.
    from lorakit.models import resolve_model

    odd = tmp_path / "odd"
    shutil.copytree(resolve_model("qwen3-tiny-random"), odd)
    (odd / "chat_template.jinja").write_text(
        "{% for m in messages[-2:] %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    refused(odd, "--out", tmp_path / "out", says="TEMPLATE would render")

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    proc = lorakit("export", "qwen3-tiny-random", "--out", tmp_path / "out", check=False)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
