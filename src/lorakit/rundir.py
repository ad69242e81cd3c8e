"""The run folder, read and guarded: its layout, the output marker and lock, readers, and checks.

A leaf: it imports only `config`, `errors` and `atomic`, so training, merge, export, the engine and
the public `Run` (lorakit.api) can all depend on it without tying themselves to one another.

    RUN_DIR/config.yaml  run.json  adapter/  checkpoints/checkpoint-N/  metrics.jsonl  plots/
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from lorakit.atomic import write_json
from lorakit.config import load_config
from lorakit.errors import LorakitError

# Checkpoint folders are named checkpoint-<optimizer step>; one counts only once its state.json is in.
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name) and (p / "state.json").is_file()
    ]
    return sorted(found, key=lambda p: int(CHECKPOINT_PATTERN.match(p.name).group(1)))


@dataclass
class RunInfo:
    run_dir: Path | None
    adapter_dir: Path
    base_model: str  # the reference as configured (built-in name, folder or hub id)
    config: "object | None"  # RunConfig when the folder is a lorakit run


def open_run(path: str | Path) -> RunInfo:
    """Accept a run directory (with adapter/ and config.yaml) or a bare PEFT adapter folder."""
    path = Path(path)
    if not path.is_dir():
        raise LorakitError(f"{path}: no such run directory")
    status = run_status(path)
    if status and status.get("status") != "completed":
        raise LorakitError(f"{path}: the run did not complete ({describe_status(status)}); nothing to use")
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


def run_status(run_dir: Path) -> dict | None:
    """run.json of a run directory, or None when it has none (unfinished or not a run)."""
    f = Path(run_dir) / "run.json"
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except ValueError:
        raise LorakitError(f"{f}: not valid JSON") from None


def describe_status(status: dict) -> str:
    if status.get("status") == "diverged":
        return (
            f"diverged at step {status.get('step')}; last good checkpoint: "
            f"{status.get('last_good_checkpoint') or 'none'}"
        )
    return f"status {status.get('status')!r}"


def claim_run_dir(output_dir: str | Path, resume: str | None, overwrite: bool) -> "RunLock":
    """Check train.output_dir, take its lock, then (under the lock) refuse to mix two runs in one folder;
    with --overwrite empty it. Returns the held lock; the caller releases it when the run ends."""
    if resume:  # nothing is deleted; a run from before the marker existed may still be resumed
        _check_place(output_dir, "train.output_dir")
    else:
        check_output_dir(output_dir, "train.output_dir", overwrite)
    run_dir = Path(output_dir)
    created = not run_dir.exists()
    lock = RunLock(run_dir).acquire()
    lock.created = created
    try:
        _check_contents(run_dir, resume, overwrite)
        if overwrite and not resume:
            for entry in run_dir.iterdir():
                if entry.name != LOCK:
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        mark_output(run_dir, "run")
    except BaseException:
        lock.release()
        raise
    return lock


def _check_contents(run_dir: Path, resume: str | None, overwrite: bool) -> None:
    if resume or overwrite:
        return
    status = run_status(run_dir)
    if status and status.get("status") == "completed":
        raise LorakitError(f"{run_dir}: already holds a finished run; pass --overwrite or set train.output_dir")
    if status:
        raise LorakitError(
            f"{run_dir}: holds a run that stopped ({describe_status(status)}); continue it with "
            f"--resume or start over with --overwrite"
        )
    ckpts = checkpoint_dirs(run_dir)
    if ckpts:
        raise LorakitError(
            f"{run_dir}: holds an unfinished run ({ckpts[-1].name}); "
            f"continue it with --resume or start over with --overwrite"
        )


# ---- output folders lorakit owns ------------------------------------------------------------------------
# Written into every folder lorakit creates for a run or a merged model: --overwrite replaces only folders
# that hold it, so a mistyped path can never delete somebody's files.
MARKER = ".lorakit-output"
LOCK = ".lorakit.lock"


def is_lorakit_output(path: Path) -> bool:
    return (Path(path) / MARKER).is_file()


def mark_output(folder: Path, kind: str) -> None:
    """Write the marker that makes `folder` recognisable as lorakit's own output."""
    from lorakit import __version__

    write_json(Path(folder) / MARKER, {"written_by": "lorakit", "kind": kind, "version": __version__})


def check_output_dir(path: str | Path, what: str, overwrite: bool) -> Path:
    """Refuse output folders whose replacement could destroy data lorakit did not write: the current
    folder and its parents, /, the home folder, a repository root, and any non-empty folder without
    lorakit's marker. `what` names the setting in messages (train.output_dir, --out)."""
    p = _check_place(path, what)
    if p.is_dir() and any(e.name != LOCK for e in p.iterdir()) and not is_lorakit_output(p):
        hint = " (--overwrite replaces only folders lorakit wrote)" if overwrite else ""
        raise LorakitError(
            f"{what} {path}: folder is not empty and was not written by lorakit{hint}; choose another folder"
        )
    return p


def _check_place(path: str | Path, what: str) -> Path:
    raw = str(path).strip()
    if not raw:
        raise LorakitError(f"{what}: empty; give a new folder for the output")
    p = Path(raw).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if p == Path(p.anchor) or p == Path.home().resolve() or p == cwd or p in cwd.parents:
        raise LorakitError(
            f"{what} {raw}: refusing to write into {p} (the root, home or current folder "
            f"or one above it); give a new folder, e.g. runs/NAME"
        )
    if (p / ".git").exists():
        raise LorakitError(f"{what} {raw}: {p} is a repository root; give a new folder, e.g. runs/NAME")
    if p.exists() and not p.is_dir():
        raise LorakitError(f"{what} {raw}: exists and is a file; give a folder")
    return p


def overlapping(a: Path, b: Path) -> bool:
    """True when folder a is b, holds b, or lies inside b."""
    a, b = Path(a).resolve(), Path(b).resolve()
    return a == b or a in b.parents or b in a.parents


class RunLock:
    """An exclusive lock on a run directory (fcntl.flock on RUN/.lorakit.lock): a second writer is refused
    with one line. The kernel drops the lock when the process dies, so a crash never leaves it held."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None
        self.created = False  # set by claim_run_dir: the folder did not exist before this run

    def acquire(self) -> "RunLock":
        import fcntl
        import os

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise LorakitError(
                f"{self.path.parent}: in use by another lorakit run{who}; wait for it to end "
                f"or set another train.output_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        import os

        if self._fd is not None:
            if self.created:  # a run that failed before writing anything leaves no folder behind
                folder = self.path.parent
                if {e.name for e in folder.iterdir()} <= {LOCK, MARKER}:
                    shutil.rmtree(folder, ignore_errors=True)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ---- adapters a later stage may load ------------------------------------------------------------------------
def check_adapter(folder: str | Path) -> Path:
    """The adapter weights file of a local adapter folder, refusing a missing file (which peft would
    otherwise take for a hub id) and non-finite tensors (a diverged run merges into NaN weights)."""
    import torch
    from safetensors.torch import load_file

    folder = Path(folder)
    weights = folder / "adapter_model.safetensors"
    legacy = folder / "adapter_model.bin"  # peft's older format
    if not weights.is_file() and legacy.is_file():
        weights = legacy
    if not weights.is_file():
        raise LorakitError(
            f"{weights}: adapter weights file missing (a local folder is never looked up "
            f"on the hub); point at a complete run or adapter folder"
        )
    try:
        tensors = (
            load_file(str(weights))
            if weights.suffix == ".safetensors"
            else torch.load(weights, map_location="cpu", weights_only=True)
        )
    except Exception as e:  # SafetensorError, OSError, or a pickle that is not plain tensors
        first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise LorakitError(f"{weights}: unreadable adapter weights ({first})") from None
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise LorakitError(
                f"{weights}: adapter tensor {name} holds NaN or infinite values (the run "
                f"diverged); retrain with a lower train.lr"
            )
    return weights


def adapter_folder(path: str | Path) -> Path:
    """The folder holding adapter_config.json: `path` itself or `path/adapter` (a run directory)."""
    p = Path(path)
    for candidate in (p, p / "adapter"):
        if (candidate / "adapter_config.json").is_file():
            check_adapter(candidate)  # a missing weights file is never a hub id; NaN adapters are refused
            return candidate
    raise LorakitError(f"{p}: not a run directory or adapter folder (no adapter_config.json in it or in adapter/)")


def base_model_of(path: str | Path) -> str:
    """The base model reference of a run directory (config.yaml model.name) or adapter folder."""
    p = Path(path)
    if (p / "config.yaml").is_file():
        return load_config(p / "config.yaml").model.name
    meta = json.loads((adapter_folder(p) / "adapter_config.json").read_text(encoding="utf-8"))
    if not meta.get("base_model_name_or_path"):
        raise LorakitError(f"{p}: no config.yaml and no base model in adapter_config.json; pass --model")
    return meta["base_model_name_or_path"]
