"""Reading a training run directory back: its config, base model and adapter folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lorakit.errors import LorakitError


@dataclass
class RunInfo:
    run_dir: Path | None
    adapter_dir: Path
    base_model: str  # the reference as configured (built-in name, folder or hub id)
    config: "object | None"  # RunConfig when the folder is a lorakit run


def open_run(path: str | Path) -> RunInfo:
    """Accept a run directory (with adapter/ and config.yaml) or a bare PEFT adapter folder."""
    from lorakit.config import load_config

    path = Path(path)
    if not path.is_dir():
        raise LorakitError(f"{path}: no such run directory")
    if (path / "adapter" / "adapter_config.json").is_file() and (path / "config.yaml").is_file():
        cfg = load_config(path / "config.yaml")
        return RunInfo(path, path / "adapter", cfg.model.name, cfg)
    if (path / "adapter_config.json").is_file():
        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise LorakitError(f"{path / 'adapter_config.json'}: base_model_name_or_path is empty")
        return RunInfo(None, path, base, None)
    if (path / "config.yaml").is_file():
        raise LorakitError(f"{path}: run has no final adapter yet (unfinished? resume it with lorakit train --resume)")
    raise LorakitError(f"{path}: not a lorakit run directory or PEFT adapter folder (no adapter_config.json)")
