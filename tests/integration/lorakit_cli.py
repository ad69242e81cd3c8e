"""Run the real `lorakit` command in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def cli_env(**extra) -> dict:
    env = dict(os.environ)
    env.setdefault("LORAKIT_CACHE", str(REPO / "tests" / ".cache"))
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def lorakit(
    *args, check: bool = True, timeout: int = 600, env: dict | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """`lorakit ARGS...` through `python -m lorakit`, with `env` added to the environment; returns the
    completed process (text output)."""
    proc = subprocess.run(
        [sys.executable, "-m", "lorakit", *map(str, args)],
        capture_output=True,
        text=True,
        env=cli_env(**(env or {})),
        timeout=timeout,
        cwd=kwargs.pop("cwd", REPO),
        **kwargs,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"lorakit {' '.join(map(str, args))} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
        )
    return proc


def write_config(path: Path, **sections) -> Path:
    """A run config YAML from plain dicts (model=..., data=..., train=...)."""
    path.write_text(yaml.safe_dump(sections, allow_unicode=True))
    return path


def alpaca_file(path: Path, n: int = 24) -> Path:
    """A small persona dataset in the tutorial's alpaca shape."""
    import json

    rows = [
        {
            "instruction": f"问题{i}：你是谁？" if i % 2 else f"Question {i}: what do you do?",
            "input": "",
            "output": f"我是甄嬛，第{i}次回答。" if i % 2 else f"I keep the lamp lit, answer {i}.",
        }
        for i in range(n)
    ]
    path.write_text(json.dumps(rows, ensure_ascii=False))
    return path
