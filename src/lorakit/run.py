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
        from matplotlib.figure import Figure

        df = self.metrics
        fig = Figure(figsize=(6, 3.5), dpi=100)
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
        _show_inline(Figure)
        return fig

    def eval(self, **kwargs) -> dict:
        """Compare base and fine-tuned model (loss, answers side by side, scores); writes eval.json and
        report.html into the run. kwargs as `lorakit.eval.compare.evaluate` (data, prompts, max_new_tokens, ...)."""
        from lorakit.eval.compare import evaluate

        return evaluate(self.path, **kwargs)

    def merge(self, out: str | Path, dtype: str = "auto", overwrite: bool = False) -> Path:
        """Fold the adapter into the base and save a plain Hugging Face model at `out`."""
        from lorakit.merge import merge

        return merge(self.path, out, dtype=dtype, overwrite=overwrite)

    def chat(self, prompt: str, *, system: str | None = None, max_new_tokens: int = 256, temperature: float = 0.7,
             top_p: float = 0.8, top_k: int = 20, seed: int | None = None, thinking: bool = False) -> str:
        """One answer from base + adapter to `prompt` (the model loads once per Run). temperature 0 is greedy."""
        from lorakit.inference.decoding import SamplingParams
        from lorakit.inference.engine import Engine
        from lorakit.inference.reasoning import ReasoningSplitter

        try:
            params = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k,
                                    max_new_tokens=max_new_tokens, seed=seed)
        except ValueError as e:
            raise LorakitError(f"sampling: {e}") from None
        if self._engine is None:
            self._engine = Engine.load(None, {"adapter": str(self.path)})
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        ids = self._engine.chat_prompt(messages, enable_thinking=thinking)
        splitter = ReasoningSplitter(opened=self._engine.opens_reasoning(ids))
        _, answer = splitter.feed(self._engine.generate(ids, params, adapter="adapter").text)
        return answer + splitter.flush()[1]


def _show_inline(figure_type) -> None:
    """In IPython, render Figures as PNG even where the inline backend was never switched on (a kernel
    started without it, or a run's plotting that set the Agg backend)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    png = shell.display_formatter.formatters["image/png"]
    try:
        png.lookup_by_type(figure_type)
        return  # matplotlib's inline backend already shows them
    except KeyError:
        pass

    def to_png(fig) -> bytes:
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()

    png.for_type(figure_type, to_png)
