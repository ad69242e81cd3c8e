"""Training checkpoints: written atomically, rotated, and found again for --resume.

A checkpoint folder appears under its final name only once complete (atomic rename), so a kill during
a save leaves the previous checkpoint intact and nothing half-written that resume could pick up.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from lorakit.atomic import atomic_dir
from lorakit.errors import LorakitError

PATTERN = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and PATTERN.match(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(PATTERN.match(p.name).group(1)))


def save_checkpoint(run_dir: Path, step: int, model, optimizer, scheduler, state: dict,
                    full: dict | None = None) -> Path:
    """Write checkpoint-<step> (adapter, optimizer, scheduler, RNG, trainer state) atomically; `full` is
    the gathered state of an FSDP-sharded run (`Distributed.full_state`)."""
    final = Path(run_dir) / "checkpoints" / f"checkpoint-{step}"
    with atomic_dir(final, overwrite=True) as tmp:
        model.save_pretrained(tmp, state_dict=full["adapter"] if full else None)
        torch.save({
            "optimizer": full["optimizer"] if full else optimizer.state_dict(),
            "sharded_adapter": full["adapter"] if full else None,
            "scheduler": scheduler.state_dict(),
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
        }, tmp / "training_state.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
    return final


def load_checkpoint(path: Path, model, optimizer, scheduler, sharded: bool = False) -> dict:
    """Restore adapter weights, optimizer, scheduler and RNG; return the trainer state. `sharded`: the
    model is FSDP-sharded, and so must the checkpoint's run have been (the optimizer formats differ)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(path)
    weights = path / "adapter_model.safetensors"
    if not (path / "state.json").is_file() or not weights.is_file():
        raise LorakitError(f"{path}: not a complete lorakit checkpoint (state.json or adapter weights missing)")
    blob = torch.load(path / "training_state.pt", weights_only=False)
    if (blob.get("sharded_adapter") is not None) != sharded:
        raise LorakitError(f"{path}: written {'without' if sharded else 'with'} FSDP sharding; resume with the "
                           f"same train.fsdp and number of processes (FSDP needs more than one)")
    if sharded:
        from lorakit.training.distributed import load_full_state

        load_full_state(model, optimizer, blob["sharded_adapter"], blob["optimizer"])
    else:
        set_peft_model_state_dict(model, load_file(str(weights)))
        optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    rng = blob["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return json.loads((path / "state.json").read_text())


def rotate(run_dir: Path, keep: int, protect: Path | None = None) -> None:
    """Delete all but the newest `keep` checkpoints, never the protected (best) one."""
    ckpts = checkpoint_dirs(run_dir)
    for p in ckpts[:-keep] if keep else ckpts:
        if protect is None or p.resolve() != Path(protect).resolve():
            shutil.rmtree(p, ignore_errors=True)
    root = Path(run_dir) / "checkpoints"
    for stale in root.glob(".checkpoint-*"):  # temp folders of a save that was killed
        shutil.rmtree(stale, ignore_errors=True)


def find_resume_point(run_dir: Path, resume: str) -> Path:
    """'latest' -> newest complete checkpoint of run_dir; otherwise the given checkpoint path."""
    if resume != "latest":
        p = Path(resume)
        if not p.is_dir():
            raise LorakitError(f"--resume {resume}: no such checkpoint folder")
        return p
    ckpts = checkpoint_dirs(run_dir)
    if not ckpts:
        raise LorakitError(f"{run_dir}: no checkpoint to resume from; start without --resume")
    return ckpts[-1]
