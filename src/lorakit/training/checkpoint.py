"""Training checkpoints: written atomically with per-file checksums, rotated, and found again for --resume.

A checkpoint folder appears under its final name only once complete (atomic rename), so a kill during
a save leaves the previous checkpoint intact and nothing half-written that resume could pick up. Each
folder lists the SHA-256 of its files in manifest.json; resume verifies them and falls back to the newest
intact checkpoint. Only tensors and plain data are ever loaded (safetensors, JSON, torch weights_only).
"""

from __future__ import annotations

import errno
import io
import json
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from lorakit.atomic import atomic_dir, file_sha256
from lorakit.errors import LorakitError
from lorakit.rundir import checkpoint_dirs

MANIFEST = "manifest.json"
STATE = "training_state.pt"


def save_checkpoint(
    run_dir: Path, step: int, model, optimizer, scheduler, state: dict, full: dict | None = None
) -> Path:
    """Write checkpoint-<step> (adapter, optimizer, scheduler, RNG, trainer state, manifest) atomically;
    `full` is the gathered state of an FSDP-sharded run (`Distributed.full_state`). A full disk is one
    line naming the folder; the previous checkpoints are untouched."""
    final = Path(run_dir) / "checkpoints" / f"checkpoint-{step}"
    try:
        with atomic_dir(final, overwrite=True) as tmp:
            model.save_pretrained(tmp, state_dict=full["adapter"] if full else None)
            blob = io.BytesIO()  # serialised in memory, so a short write is a plain OSError with its errno
            torch.save(
                {
                    "optimizer": full["optimizer"] if full else optimizer.state_dict(),
                    "sharded_adapter": full["adapter"] if full else None,
                    "scheduler": scheduler.state_dict(),
                    "rng": _rng_state(),
                },
                blob,
            )
            (tmp / STATE).write_bytes(blob.getvalue())
            (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
            (tmp / MANIFEST).write_text(json.dumps({"files": _digests(tmp)}, indent=2))
    except Exception as e:  # torch, safetensors and the os each word a full disk their own way
        if not disk_full(e):
            raise
        previous = checkpoint_dirs(run_dir)
        intact = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
        raise LorakitError(
            f"disk full while writing {final} ({_first_line(e)}); {intact}; free space "
            f"and continue with lorakit train <config> --resume"
        ) from None
    return final


def disk_full(e: BaseException) -> bool:
    """Whether an exception (or one it wraps) says the disk or the file size limit is exhausted."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
        text = str(e)
        if any(
            s in text
            for s in (
                "No space left",
                "File too large",
                "Disk quota",
                "StorageFull",
                "FileTooLarge",
                "file write failed",
            )
        ):
            return True
        e = e.__cause__ or e.__context__
    return False


def verify(path: Path) -> str | None:
    """None when every file matches the checksum written at save time, else why the checkpoint is unusable."""
    path = Path(path)
    manifest = path / MANIFEST
    if not manifest.is_file():
        return "no manifest.json (written by an older lorakit or damaged)"
    try:
        expected = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return "manifest.json is unreadable"
    for name, want in sorted(expected.items()):
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != want["bytes"]:
            return f"{name} has {f.stat().st_size} bytes, {want['bytes']} when saved (truncated or replaced)"
        if file_sha256(f) != want["sha256"]:
            return f"{name} does not match its checksum (corrupted)"
    for name in ("state.json", STATE, "adapter_model.safetensors"):
        if name not in expected:
            return f"{name} is not covered by the manifest"
    return None


def load_checkpoint(path: Path, model, optimizer, scheduler, sharded: bool = False) -> dict:
    """Restore adapter weights, optimizer, scheduler and RNG; return the trainer state. `sharded`: the
    model is FSDP-sharded, and so must the checkpoint's run have been (the optimizer formats differ)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(path)
    weights = path / "adapter_model.safetensors"
    if not (path / "state.json").is_file() or not weights.is_file():
        raise LorakitError(f"{path}: not a complete lorakit checkpoint (state.json or adapter weights missing)")
    try:
        blob = torch.load(path / STATE, weights_only=True, map_location="cpu")
    except Exception as e:  # a pickle that asks for anything but tensors and plain data is refused here
        raise LorakitError(
            f"{path / STATE}: not a plain tensor file, refusing to load it ({_first_line(e)[:160]})"
        ) from None
    if (blob.get("sharded_adapter") is not None) != sharded:
        raise LorakitError(
            f"{path}: written {'without' if sharded else 'with'} FSDP sharding; resume with the "
            f"same train.fsdp and number of processes (FSDP needs more than one)"
        )
    try:
        if sharded:
            from lorakit.training.distributed import load_full_state

            load_full_state(model, optimizer, blob["sharded_adapter"], blob["optimizer"])
        else:
            set_peft_model_state_dict(model, load_file(str(weights)))
            optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise LorakitError(
            f"{path}: checkpoint does not fit this model (lora.r, lora.target_modules or the "
            f"base architecture changed?): {_first_line(e)[:160]}"
        ) from None
    _set_rng_state(blob["rng"])
    return json.loads((path / "state.json").read_text())


def rotate(run_dir: Path, keep: int, protect: Path | None = None) -> None:
    """Delete all but the newest `keep` checkpoints, never the protected (best) one."""
    ckpts = checkpoint_dirs(run_dir)
    for p in ckpts[:-keep] if keep else ckpts:
        if protect is None or p.resolve() != Path(protect).resolve():
            shutil.rmtree(p, ignore_errors=True)
    remove_stale(run_dir)


def remove_stale(run_dir: Path) -> list[Path]:
    """Delete the temporary folders of saves that were killed (call only while holding the run lock)."""
    gone = []
    for root in (Path(run_dir) / "checkpoints", Path(run_dir)):
        if root.is_dir():
            for stale in list(root.glob(".checkpoint-*")) + list(root.glob(".adapter.*")):
                shutil.rmtree(stale, ignore_errors=True)
                gone.append(stale)
    return gone


def existing_best(state: dict, final_step: int, run_dir: Path) -> str | None:
    """run.json's best_checkpoint: the best step's checkpoint if it is still on disk, the final adapter
    when the best step is the last one, else None (never a rotated-away folder)."""
    best, step = state.get("best_checkpoint"), state.get("best_step")
    if step is not None and step == final_step:
        return str(Path(run_dir) / "adapter")
    return best if best and Path(best).is_dir() else None


def find_resume_point(run_dir: Path, resume: str, say=None) -> Path:
    """'latest' -> newest intact checkpoint of run_dir, saying which newer ones were skipped and why;
    otherwise the given checkpoint path, which must be intact."""
    say = say or (lambda msg: print(msg, file=sys.stderr))
    if resume != "latest":
        p = Path(resume)
        if not p.is_dir():
            raise LorakitError(f"--resume {resume}: no such checkpoint folder")
        problem = verify(p)
        if problem:
            raise LorakitError(f"--resume {resume}: {problem}; pass --resume alone to use the newest intact one")
        return p
    ckpts = checkpoint_dirs(run_dir)
    if not ckpts:
        raise LorakitError(f"{run_dir}: no checkpoint to resume from; start without --resume")
    for p in reversed(ckpts):
        problem = verify(p)
        if problem is None:
            return p
        say(f"skipping {p}: {problem}")
    raise LorakitError(
        f"{run_dir}: no intact checkpoint to resume from (all {len(ckpts)} failed their "
        f"checksums, see above); start over with --overwrite"
    )


def _digests(folder: Path) -> dict:
    return {
        f.name: {"sha256": file_sha256(f), "bytes": f.stat().st_size} for f in sorted(folder.iterdir()) if f.is_file()
    }


def _rng_state() -> dict:
    """RNG states as tensors and plain data only, so that torch.load(weights_only=True) reads them."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(rng: dict) -> None:
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    n = rng["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
