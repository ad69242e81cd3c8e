"""The exported GGUF in a real llama.cpp (node-llama-cpp's prebuilt libllama, installed by `make install`).

llama.cpp must tokenize lorakit's prompt to the same ids, continue it greedily with the same tokens as
lorakit's own generation at temperature 0, and the chat template it reads from the GGUF must render the
same prompt as the Hugging Face template.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lorakit.exporting.modelfile import hf_prompt

HERE = Path(__file__).parent / "llama_cpp"
MAX_TOKENS = 12
CONVERSATION = [{"role": "user", "content": "Who are you, stranger?"},
                {"role": "assistant", "content": "No stranger here, love!"},
                {"role": "user", "content": "你住在哪里？Where is the lighthouse?"}]  # fmt: skip

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (HERE / "node_modules" / "node-llama-cpp").is_dir(),
    reason="llama.cpp for the export tests is not installed (needs node and npm; run `make install`)",
)


def llama_cpp(gguf: Path, prompt: str, messages: list[dict], max_tokens: int) -> dict:
    request = json.dumps({"model": str(gguf), "prompt": prompt, "max_tokens": max_tokens, "messages": messages})
    proc = subprocess.run(["node", "run_gguf.mjs"], input=request, capture_output=True, text=True, cwd=HERE,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_llama_cpp_generates_what_lorakit_generates(exported):
    from lorakit.inference.decoding import SamplingParams
    from lorakit.inference.engine import Engine

    engine = Engine.load(str(exported.merged), dtype="float32", device="cpu")
    ids = engine.chat_prompt(CONVERSATION, enable_thinking=False)
    prompt = hf_prompt(engine.tokenizer, CONVERSATION)
    want = engine.generate(ids, SamplingParams(temperature=0, max_new_tokens=MAX_TOKENS)).text

    got = llama_cpp(exported.gguf("f16"), prompt, CONVERSATION, MAX_TOKENS)
    assert got["prompt_tokens"] == ids  # same vocabulary, merges, pre-tokenizer and special tokens
    text = engine.decode(got["tokens"])
    print(f"\n{exported.base}: lorakit {want!r} / llama.cpp {text!r}")
    assert text == want and len(got["tokens"]) > 0
    # The chat template llama.cpp read from the GGUF renders the prompt lorakit trained with.
    assert got["rendered"] == prompt
