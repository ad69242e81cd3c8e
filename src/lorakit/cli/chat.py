"""`lorakit chat`: talk to a model (and optionally a trained adapter) in the terminal, streaming.

The answer goes to stdout; reasoning (thinking on) goes to stderr, dimmed, so that piping the output
keeps only the answer. Interactive mode keeps the conversation; `/reset` clears it, `/exit` or EOF ends.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from lorakit.errors import LorakitError
from lorakit.inference.reasoning import thinking_flag

# Qwen3's recommended sampling per mode (also sensible for other chat models).
DEFAULTS = {"off": dict(temperature=0.7, top_p=0.8, top_k=20), "on": dict(temperature=0.6, top_p=0.95, top_k=20)}
HELP = "commands: /reset clears the conversation, /exit (or Ctrl-D) quits"


def chat_command(
    model: Annotated[
        Optional[str],
        typer.Option("--model", help="base model: built-in name, folder or hub id (default: the adapter run's base)"),
    ] = None,
    adapter: Annotated[
        Optional[Path], typer.Option("--adapter", help="training run directory (or adapter folder) to apply")
    ] = None,
    prompt: Annotated[Optional[str], typer.Option("--prompt", help="answer this one message and exit")] = None,
    system: Annotated[Optional[str], typer.Option("--system", help="system prompt")] = None,
    temperature: Annotated[
        Optional[float],
        typer.Option("--temperature", help="sampling temperature, 0 = greedy (default 0.7, thinking 0.6)"),
    ] = None,
    top_p: Annotated[
        Optional[float], typer.Option("--top-p", help="nucleus sampling mass (default 0.8, thinking 0.95)")
    ] = None,
    top_k: Annotated[
        Optional[int], typer.Option("--top-k", help="sample among the k likeliest tokens, 0 = all (default 20)")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="longest answer in tokens")] = 512,
    seed: Annotated[Optional[int], typer.Option("--seed", help="seed for reproducible sampling")] = None,
    thinking: Annotated[
        Literal["on", "off"], typer.Option("--thinking", help="let the model reason before answering (Qwen3)")
    ] = "off",
    dtype: Annotated[str, typer.Option("--dtype", help="weight dtype: auto, float32, bfloat16, float16")] = "auto",
) -> None:
    """Chat in the terminal. Example: lorakit chat --adapter runs/demo --prompt "Who are you?\""""
    if model is None and adapter is None:
        raise LorakitError("give --model (a built-in name, folder or hub id) or --adapter RUN_DIR")
    if adapter is not None:
        from lorakit.rundir import adapter_folder

        adapter_folder(adapter)  # a wrong path fails before torch is imported
    from lorakit.inference.engine import Engine, SamplingParams

    given = dict(temperature=temperature, top_p=top_p, top_k=top_k)
    picked = {**DEFAULTS[thinking], **{k: v for k, v in given.items() if v is not None}}
    try:
        params = SamplingParams(max_new_tokens=max_new_tokens, seed=seed, **picked)
    except ValueError as e:
        raise LorakitError(f"sampling: {e}") from None
    _status("loading model ...")
    engine = Engine.load(model, {"adapter": str(adapter)} if adapter else None, dtype=dtype)
    session = ChatSession(engine, params, adapter="adapter" if adapter else None, system=system, thinking=thinking)
    if prompt is not None:
        session.ask(prompt)
        return
    repl(session)


class ChatSession:
    """A conversation with one engine: history, prompt building, streaming an answer to the terminal."""

    def __init__(
        self, engine, params, adapter: str | None = None, system: str | None = None, thinking: "str | bool" = False
    ):
        self.engine, self.params, self.adapter, self.system, self.thinking = engine, params, adapter, system, thinking
        self.history: list[dict] = []

    def reset(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        self.history = []

    def ask(self, text: str) -> str:
        """Send one user message, stream the reply to the terminal, remember it; return the answer."""
        messages, turn = self._fit(self.history + [{"role": "user", "content": text}])
        out, err = _console(sys.stdout), _console(sys.stderr)
        answer, reasoned = [], False
        try:
            stream = self.engine.answer_stream(messages, self.params, adapter=self.adapter, thinking=self.thinking)
        except ValueError as e:
            raise LorakitError(str(e)) from None
        for delta in stream:
            if delta.reasoning:
                err.print(delta.reasoning, style="dim", end="")
                reasoned = True
            if delta.text:
                if reasoned and not answer:
                    err.print("")  # end the reasoning line before the answer starts
                out.print(delta.text, end="")
                answer.append(delta.text)
        out.print("")
        self.history = turn + [{"role": "assistant", "content": "".join(answer)}]
        return "".join(answer)

    def _fit(self, turn: list[dict]) -> tuple[list[dict], list[dict]]:
        """The messages to send for `turn` (system prompt first) and the turn itself, less the oldest
        exchanges the answer had no room for."""
        while True:
            messages = ([{"role": "system", "content": self.system}] if self.system else []) + turn
            ids = self.engine.chat_prompt(messages, enable_thinking=thinking_flag(self.thinking))
            user_turns = [i for i, m in enumerate(turn) if m["role"] == "user"]
            if len(ids) + self.params.max_new_tokens <= self.engine.max_context or len(user_turns) < 2:
                return messages, turn
            turn = turn[user_turns[1] :]  # forget the oldest exchange


def repl(session: ChatSession, lines=None) -> None:
    """Read messages line by line (stdin by default) and answer each; `/reset`, `/exit`, EOF."""
    interactive = lines is None and sys.stdin.isatty()
    if interactive:
        _status(HELP)
    source = iter(lines) if lines is not None else None
    while True:
        try:
            if source is not None:
                line = next(source)
            elif interactive:
                line = input(">>> ")
            else:
                line = sys.stdin.readline()
                if not line:
                    raise EOFError
        except (EOFError, StopIteration):
            return
        except KeyboardInterrupt:
            _status("")
            return
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return
        if line == "/reset":
            session.reset()
            _status("(conversation cleared)")
            continue
        if line.startswith("/"):
            _status(f"unknown command {line.split()[0]}; {HELP}")
            continue
        try:
            session.ask(line)
        except LorakitError as e:
            _status(f"error: {e}")
        except KeyboardInterrupt:
            _status("\n(interrupted)")  # the unfinished answer is not added to the history


def _console(stream):
    from rich.console import Console

    # No highlighting or markup: model output is shown exactly as generated.
    return Console(file=stream, highlight=False, markup=False, emoji=False, soft_wrap=True)


def _status(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
