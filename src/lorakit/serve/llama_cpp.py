"""`lorakit serve --engine llama.cpp`: run an exported GGUF in llama.cpp's `llama-server` (CPU production
engine, OpenAI-compatible), after the checks llama-server would otherwise fail on after loading."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import typer

from lorakit import settings
from lorakit.errors import LorakitError

LLAMA_SERVER = "llama-server"


def run_llama_cpp(model, adapters, served_model_name, host, port, api_key, max_model_len, print_command) -> None:
    """Check, then print (`print_command`) or run the llama-server command."""
    if adapters:
        raise LorakitError("--engine llama.cpp serves one exported GGUF, not LoRA adapters; run `lorakit export "
                           "RUN_DIR --out DIR` and serve DIR with --model DIR")  # fmt: skip
    if model is None:
        raise LorakitError("--engine llama.cpp needs --model: a folder written by `lorakit export` or a .gguf file")
    gguf = find_gguf(Path(model))
    cmd = build_llama_server_command(gguf, served_model_name or gguf.stem, host, port, api_key, max_model_len)
    if print_command:
        typer.echo(shlex.join(cmd))
        return
    if shutil.which(cmd[0]) is None:
        raise LorakitError("llama.cpp's llama-server is not installed (build llama.cpp, or set "
                           "LORAKIT_LLAMA_SERVER to its path); or use --print-command to see the command")  # fmt: skip
    print(f"running: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    code = subprocess.call(cmd)
    if code:
        raise typer.Exit(code)


def find_gguf(path: Path) -> Path:
    """The one GGUF file of an export folder (or the file itself), checked to be a GGUF."""
    if path.is_dir():
        files = sorted(path.glob("*.gguf"))
        if not files:
            hint = "run `lorakit export` on it first" if (path / "config.json").is_file() or \
                (path / "adapter").is_dir() else "give the folder `lorakit export` wrote"  # fmt: skip
            raise LorakitError(f"{path}: no .gguf file; llama.cpp runs GGUF only: {hint}")
        if len(files) > 1:
            raise LorakitError(f"{path}: holds {len(files)} .gguf files; pass the one to serve")
        path = files[0]
    if not path.is_file():
        raise LorakitError(f"{path}: no such GGUF file or export folder")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise LorakitError(f"{path}: not a GGUF file (bad magic)")
    return path


def build_llama_server_command(
    gguf: Path, served_name: str, host: str, port: int, api_key: str | None = None, max_model_len: int | None = None
) -> list[str]:
    """The llama-server argument list. --jinja renders the chat template embedded in the GGUF."""
    binary = settings.llama_server() or LLAMA_SERVER
    cmd = [binary, "-m", str(gguf), "--alias", served_name, "--host", host, "--port", str(port), "--jinja"]
    if max_model_len:
        cmd += ["--ctx-size", str(max_model_len)]
    if api_key:
        cmd += ["--api-key", api_key]
    return cmd
