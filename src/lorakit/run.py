"""Reading a training run directory back: its config, base model and adapter folder."""

from __future__ import annotations

import json
import shutil
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
        return (f"diverged at step {status.get('step')}; last good checkpoint: "
                f"{status.get('last_good_checkpoint') or 'none'}")
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
    from lorakit.training.checkpoint import checkpoint_dirs

    if resume or overwrite:
        return
    status = run_status(run_dir)
    if status and status.get("status") == "completed":
        raise LorakitError(f"{run_dir}: already holds a finished run; pass --overwrite or set train.output_dir")
    if status:
        raise LorakitError(f"{run_dir}: holds a run that stopped ({describe_status(status)}); continue it with "
                           f"--resume or start over with --overwrite")
    ckpts = checkpoint_dirs(run_dir)
    if ckpts:
        raise LorakitError(f"{run_dir}: holds an unfinished run ({ckpts[-1].name}); "
                           f"continue it with --resume or start over with --overwrite")


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
    from lorakit.atomic import write_json

    write_json(Path(folder) / MARKER, {"written_by": "lorakit", "kind": kind, "version": __version__})


def check_output_dir(path: str | Path, what: str, overwrite: bool) -> Path:
    """Refuse output folders whose replacement could destroy data lorakit did not write: the current
    folder and its parents, /, the home folder, a repository root, and any non-empty folder without
    lorakit's marker. `what` names the setting in messages (train.output_dir, --out)."""
    p = _check_place(path, what)
    if p.is_dir() and any(e.name != LOCK for e in p.iterdir()) and not is_lorakit_output(p):
        hint = " (--overwrite replaces only folders lorakit wrote)" if overwrite else ""
        raise LorakitError(f"{what} {path}: folder is not empty and was not written by lorakit{hint}; "
                           f"choose another folder")
    return p


def _check_place(path: str | Path, what: str) -> Path:
    raw = str(path).strip()
    if not raw:
        raise LorakitError(f"{what}: empty; give a new folder for the output")
    p = Path(raw).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if p == Path(p.anchor) or p == Path.home().resolve() or p == cwd or p in cwd.parents:
        raise LorakitError(f"{what} {raw}: refusing to write into {p} (the root, home or current folder "
                           f"or one above it); give a new folder, e.g. runs/NAME")
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
            raise LorakitError(f"{self.path.parent}: in use by another lorakit run{who}; wait for it to end "
                               f"or set another train.output_dir") from None
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
        raise LorakitError(f"{weights}: adapter weights file missing (a local folder is never looked up "
                           f"on the hub); point at a complete run or adapter folder")
    try:
        tensors = (load_file(str(weights)) if weights.suffix == ".safetensors"
                   else torch.load(weights, map_location="cpu", weights_only=True))
    except Exception as e:  # SafetensorError, OSError, or a pickle that is not plain tensors
        first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise LorakitError(f"{weights}: unreadable adapter weights ({first})") from None
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise LorakitError(f"{weights}: adapter tensor {name} holds NaN or infinite values (the run "
                               f"diverged); retrain with a lower train.lr")
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
        from lorakit.config import load_config

        return load_config(p / "config.yaml").model.name
    meta = json.loads((adapter_folder(p) / "adapter_config.json").read_text(encoding="utf-8"))
    if not meta.get("base_model_name_or_path"):
        raise LorakitError(f"{p}: no config.yaml and no base model in adapter_config.json; pass --model")
    return meta["base_model_name_or_path"]


class Run:
    """A training run folder read back: config, metrics, and the later stages on its adapter.

    Example:
        >>> run = lorakit.Run("runs/demo")
        >>> run.metrics[["step", "loss"]].tail()
        >>> run.plot()                      # inline in Jupyter
        >>> run.chat("Who are you?")
        >>> run.eval(); run.merge("runs/demo-merged")
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "config.yaml").is_file():
            if not self.path.is_dir():
                raise LorakitError(f"{self.path}: no such run directory")
            raise LorakitError(f"{self.path}: not a lorakit run directory (no config.yaml)")
        self._engine = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def config(self):
        """The run's RunConfig (config.yaml)."""
        from lorakit.config import load_config

        return load_config(self.path / "config.yaml")

    @property
    def summary(self) -> dict | None:
        """run.json (steps, best eval, final loss, data counts), or None while the run is unfinished."""
        p = self.path / "run.json"
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def metrics(self):
        """metrics.jsonl as a pandas DataFrame, one row per logged step (loss, lr, eval_loss, ...)."""
        import pandas as pd

        from lorakit.training.tracking import read_metrics

        rows = read_metrics(self.path / "metrics.jsonl")
        return pd.DataFrame(rows).groupby("step", as_index=False).first() if rows else pd.DataFrame()

    def plot(self, keys: tuple[str, ...] = ("loss", "eval_loss")):
        """The loss curves as a matplotlib Figure (shown inline when a notebook cell ends with it)."""
        from lorakit.figures import Chart

        df = self.metrics
        fig = Chart(figsize=(6, 3.5), dpi=100)
        ax = fig.add_subplot()
        for key in keys:
            if key in df:
                pts = df[["step", key]].dropna()
                ax.plot(pts["step"], pts[key], marker="o" if len(pts) < 30 else None, markersize=3, label=key)
        ax.set_xlabel("optimizer step")
        ax.set_title(f"{self.path.name}: loss")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        return fig

    def eval(self, **kwargs) -> dict:
        """Compare base and fine-tuned model (loss, answers side by side, scores); writes eval.json and
        report.html into the run. kwargs as `lorakit.eval.compare.evaluate` (data, prompts, max_new_tokens, ...)."""
        from lorakit.api import evaluate

        return evaluate(self.path, **kwargs)

    def benchmark(self, tasks: "str | list[str]", **kwargs) -> dict:
        """lm-eval `tasks` on base and fine-tuned model (see `lorakit.benchmark`); kwargs: limit,
        num_fewshot, include_path."""
        from lorakit.api import benchmark

        return benchmark(self.path, tasks, **kwargs)

    def merge(self, out: str | Path, dtype: str = "auto", overwrite: bool = False) -> Path:
        """Fold the adapter into the base and save a plain Hugging Face model at `out`."""
        from lorakit.api import merge

        return merge(self.path, out, dtype=dtype, overwrite=overwrite)

    def export(self, out: str | Path, *, quant: str = "q8_0", format: str = "gguf", overwrite: bool = False) -> Path:
        """The fine-tune as GGUF (merged on the way) with an Ollama Modelfile and a model card at `out`."""
        from lorakit.api import export

        return export(self.path, out, format=format, quant=quant, overwrite=overwrite)

    def chat(self, prompt: str, *, system: str | None = None, max_new_tokens: int = 256, temperature: float = 0.7,
             top_p: float = 0.8, top_k: int = 20, seed: int | None = None, thinking: bool = False) -> str:
        """One answer from base + adapter to `prompt` (the model loads once per Run). temperature 0 is greedy."""
        from lorakit.inference.engine import Engine, SamplingParams

        try:
            params = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k,
                                    max_new_tokens=max_new_tokens, seed=seed)
        except ValueError as e:
            raise LorakitError(f"sampling: {e}") from None
        if self._engine is None:
            self._engine = Engine.load(None, {"adapter": str(self.path)})
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return self._engine.answer(messages, params, adapter="adapter", thinking=thinking).text
