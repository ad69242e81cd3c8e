"""`lorakit export RUN --format gguf-lora`: the adapter alone, in llama.cpp's LoRA GGUF form.

Loaded over the base GGUF in a real llama.cpp (node-llama-cpp's createContext lora adapters), it must
generate the same greedy tokens as the merged export; its tensor names and shapes must be the ones
llama.cpp's adapter loader checks against the base GGUF that lorakit writes (Qwen3 and SmolLM2/Llama).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import pytest
from test_export_llama_cpp import CONVERSATION, HERE, llama_cpp

from lorakit.exporting.modelfile import hf_prompt

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (HERE / "node_modules" / "node-llama-cpp").is_dir(),
    reason="llama.cpp for the export tests is not installed (needs node and npm; run `make install`)",
)

MAX_TOKENS = 12


def _files(folder: Path) -> tuple[Path, Path]:
    adapter = next(folder.glob("*-lora.gguf"))
    (base,) = [p for p in folder.glob("*.gguf") if p != adapter]
    return adapter, base


def test_adapter_gguf_fits_the_base_gguf(exported):
    folder = exported.adapter_folder()
    adapter, base = _files(folder)
    reader = gguf.GGUFReader(adapter)
    fields = reader.fields
    assert fields["general.type"].contents() == "adapter"
    assert fields["adapter.type"].contents() == "lora"
    config = json.loads((exported.run / "adapter" / "adapter_config.json").read_text())
    assert fields["adapter.lora.alpha"].contents() == config["lora_alpha"]
    base_reader = gguf.GGUFReader(base)
    assert fields["general.architecture"].contents() == base_reader.fields["general.architecture"].contents()
    shapes = {t.name: [int(n) for n in t.shape] for t in base_reader.tensors}  # ne: [columns, rows]
    pairs = {}
    for t in reader.tensors:
        name, part = t.name.rsplit(".", 1)
        pairs.setdefault(name, {})[part] = [int(n) for n in t.shape]
    n_layers = json.loads((exported.merged / "config.json").read_text())["num_hidden_layers"]
    assert len(pairs) == 7 * n_layers  # all-linear: q k v o gate up down in every layer
    for name, ab in pairs.items():
        # llama.cpp's checks (src/llama-adapter.cpp): a spans the weight's columns, b its rows, rank between
        assert ab["lora_a"][0] == shapes[name][0] and ab["lora_b"][1] == shapes[name][1], name
        assert ab["lora_a"][1] == ab["lora_b"][0] == config["r"], name
    modelfile = (folder / "Modelfile").read_text()
    assert f"FROM ./{base.name}\nADAPTER ./{adapter.name}\n" in modelfile
    card = (folder / "README.md").read_text()
    assert "## Base model needed" in card and f"`{base.name}` (in this folder)" in card
    assert f"--lora {adapter.name}" in card


def test_adapter_over_base_in_llama_cpp_generates_as_the_merged_export(exported):
    from transformers import AutoTokenizer

    adapter, base = _files(exported.adapter_folder())
    prompt = hf_prompt(AutoTokenizer.from_pretrained(exported.merged), CONVERSATION)
    merged = llama_cpp(exported.gguf("f16"), prompt, CONVERSATION, MAX_TOKENS)
    with_adapter = llama_cpp_lora(base, adapter, prompt)
    alone = llama_cpp(base, prompt, CONVERSATION, MAX_TOKENS)
    print(
        f"\n{exported.base}: merged {merged['tokens']} / base + adapter {with_adapter['tokens']} / "
        f"base alone {alone['tokens']}"
    )
    assert with_adapter["tokens"] == merged["tokens"] and len(merged["tokens"]) > 0


def llama_cpp_lora(base: Path, adapter: Path, prompt: str) -> dict:
    import subprocess

    request = json.dumps({"model": str(base), "prompt": prompt, "max_tokens": MAX_TOKENS, "messages": CONVERSATION,
                          "lora": [str(adapter)]})  # fmt: skip
    proc = subprocess.run(["node", "run_gguf.mjs"], input=request, capture_output=True, text=True, cwd=HERE,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_base_gguf_option_points_at_a_shared_base(exports, tmp_path):
    from lorakit.exporting import export_model

    exported = exports("qwen3-tiny-random")
    _, base = _files(exported.adapter_folder())
    out = export_model(exported.run, tmp_path / "persona", fmt="gguf-lora", base_gguf=base, quality_tokens=0)
    assert sorted(p.name for p in out.glob("*.gguf")) == ["persona-lora.gguf"]  # the base is not copied
    modelfile = (out / "Modelfile").read_text()
    assert f"FROM {base.resolve()}\nADAPTER ./persona-lora.gguf\n" in modelfile
    assert f"`{base.resolve()}`, base {base.name}" in (out / "README.md").read_text()
