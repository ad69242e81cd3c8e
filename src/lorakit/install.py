"""How to install what is missing, said the way that works where lorakit runs.

From a checkout (`make install` built .venv), the make targets install with the pinned versions and
the right torch build; `pip install 'lorakit[...]'` would fetch a different lorakit from PyPI. Installed
as a package, pip is the way. Error messages call `install_command` so they name a command that works.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

VLLM_VENV = ".venv-vllm"  # make install-gpu: vLLM pins its own torch, so it lives apart from .venv


def checkout_root() -> Path | None:
    """The repository folder when lorakit is imported from a checkout's src/ (editable install or
    PYTHONPATH), else None."""
    root = Path(__file__).resolve().parents[2]
    marks = ("Makefile", "pyproject.toml", "requirements/constraints.txt")
    return root if all((root / m).is_file() for m in marks) else None


def install_command(pip_args: str, make_target: str | None = None) -> str:
    """`make TARGET` in a checkout that has one for it, the checkout's pinned pip install otherwise, and
    plain `pip install` for an installed lorakit."""
    root = checkout_root()
    if root is None:
        return f"pip install {pip_args}"
    here = Path.cwd().resolve() == root
    if make_target:
        return f"make {make_target}" if here else f"make -C {root} {make_target}"
    constraints = "requirements/constraints.txt" if here else str(root / "requirements" / "constraints.txt")
    return f"{_python()} -m pip install -c {constraints} {pip_args}"


def vllm_executable() -> str | None:
    """The `vllm` command: on PATH, else the one `make install-gpu` put in the checkout's .venv-vllm."""
    import shutil

    on_path = shutil.which("vllm")
    if on_path:
        return on_path
    root = checkout_root()
    exe = root / VLLM_VENV / "bin" / "vllm" if root else None
    return str(exe) if exe and exe.is_file() and os.access(exe, os.X_OK) else None


def _python() -> str:
    rel = os.path.relpath(sys.executable)
    return sys.executable if rel.startswith("..") else rel
