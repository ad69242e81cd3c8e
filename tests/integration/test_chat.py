"""`lorakit chat`: one-shot and interactive use through the real CLI, and the session logic in-process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lorakit.cli.chat import ChatSession, repl
from lorakit.inference.engine import Engine, SamplingParams

LORAKIT = str(Path(sys.executable).parent / "lorakit")


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([LORAKIT, "chat", *args], input=stdin, capture_output=True, text=True, timeout=300)


def test_one_shot_answer_from_a_real_model():
    done = run_cli(
        "--model",
        "smollm2-135m-instruct",
        "--prompt",
        "What is the capital of France?",
        "--temperature",
        "0",
        "--max-new-tokens",
        "20",
    )
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory whose adapter is an untrained LoRA on qwen3-tiny-random (enough for the CLI path)."""
    from peft import LoraConfig, get_peft_model

    from lorakit import models
    from lorakit.config import ModelConfig, RunConfig, config_to_yaml

    root = tmp_path_factory.mktemp("run")
    path = models.resolve_model("qwen3-tiny-random")
    model = get_peft_model(models.load_model(path), LoraConfig(r=4, target_modules=["q_proj"]))
    model.save_pretrained(root / "adapter")
    (root / "config.yaml").write_text(config_to_yaml(RunConfig(model=ModelConfig(name="qwen3-tiny-random"))))
    return root


def test_interactive_session_with_an_adapter_run(run_dir):
    script = "hello\n/reset\n/bogus\nagain\n/exit\nnever read\n"
    done = run_cli("--adapter", str(run_dir), "--max-new-tokens", "5", "--seed", "1", stdin=script)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) >= 2  # two answers, each ended by a newline
    assert "(conversation cleared)" in done.stderr and "unknown command /bogus" in done.stderr
    eof = run_cli("--adapter", str(run_dir), "--max-new-tokens", "3", stdin="one line, then EOF\n")
    assert eof.returncode == 0, eof.stderr


def test_needs_a_model():
    done = run_cli("--prompt", "hi")
    assert done.returncode == 2 and done.stderr.strip().startswith("error: give --model")
    assert len(done.stderr.strip().splitlines()) == 1


class Thinker(torch.nn.Module):
    """Answers every prompt with a fixed thinking reply."""

    def __init__(self, tokenizer, reply: str):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.vocab = len(tokenizer)
        self.script = tokenizer.encode(reply, add_special_tokens=False) + [tokenizer.eos_token_id]
        self.config = SimpleNamespace(max_position_embeddings=96)
        self.generation_config = SimpleNamespace(eos_token_id=[tokenizer.eos_token_id])

    def forward(self, input_ids, use_cache=True, logits_to_keep=1, cache=None):
        step = cache or 0
        row = torch.full((self.vocab,), -100.0)
        row[self.script[min(step, len(self.script) - 1)]] = 10.0
        return SimpleNamespace(logits=row.view(1, 1, -1), cache=step + 1)


@pytest.fixture(scope="module")
def thinker():
    from lorakit import models

    tokenizer = models.load_tokenizer(models.resolve_model("qwen3-tiny-random"))
    return Engine(Thinker(tokenizer, "<think>\nweighing it\n</think>\n\nThe answer."), tokenizer)


def test_reasoning_goes_to_stderr_and_history_keeps_the_answer(thinker, capsys):
    session = ChatSession(thinker, SamplingParams(temperature=0, max_new_tokens=20), system="be brief", thinking=True)
    assert session.ask("why?") == "The answer."
    out, err = capsys.readouterr()
    assert out == "The answer.\n" and "weighing it" in err and "think>" not in out + err
    assert session.history == [{"role": "user", "content": "why?"}, {"role": "assistant", "content": "The answer."}]


def test_long_conversations_forget_the_oldest_turns(thinker, capsys):
    session = ChatSession(thinker, SamplingParams(temperature=0, max_new_tokens=20))
    repl(session, lines=["first question " * 12, "second question " * 12, "third"])
    users = [m["content"] for m in session.history if m["role"] == "user"]
    assert users[-1] == "third" and len(users) < 3  # the 96-token context cannot hold all three
    assert capsys.readouterr().out.count("The answer.") == 3
