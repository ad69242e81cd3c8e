"""The public API behind `import lorakit`: one function per stage, and `Run`, a finished run read back.

The CLI's commands are thin calls of these functions; the notebook (examples/huanhuan.ipynb) uses them
directly. Everything heavy (torch, transformers, peft) is imported inside the functions, after the
arguments are checked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from lorakit.errors import LorakitError


def train(
    config_or_path: "str | Path | dict | Any",
    *,
    resume: "bool | str" = False,
    overwrite: bool = False,
    dry_run: bool = False,
    preset: str | None = None,
    on_setup: Callable | None = None,
    resume_anyway: bool = False,
    **overrides,
):
    """Fine-tune with LoRA and return the finished `Run`.

    `config_or_path`: a YAML file, a dict of config sections, or a `RunConfig`. `overrides` are config
    keys, dotted as on the command line (pass them with `**{"train.lr": 2e-4}`) or nested by section
    (`train={"lr": 2e-4, "max_steps": 20}`). `resume`: True for the run folder's latest checkpoint, or a
    checkpoint folder; `resume_anyway` continues even where the config or data changed what training
    computes (refused otherwise). `preset`: named overrides (`low-memory`). `on_setup(setup)` runs once the model
    and optimizer are built, before the first step (e.g. to hook a profiler onto `setup.model`).
    With `dry_run`, prints the plan and returns the `Plan` instead (see `lorakit.training.plan.plan_run`).

    Example:
        >>> import lorakit
        >>> run = lorakit.train("configs/demo.yaml", train={"max_steps": 20}, **{"train.lr": 2e-4})
        >>> run.metrics.tail()
    """
    from lorakit.config import PRESETS, RunConfig, load_config, parse_override

    given: dict = {}
    if preset is not None:
        if preset not in PRESETS:
            raise LorakitError(f"--preset {preset}: unknown preset; choose from {', '.join(PRESETS)}")
        given.update(parse_override(item) for item in PRESETS[preset])
    given.update(overrides)
    if isinstance(config_or_path, RunConfig):
        cfg = load_config(config_or_path.model_dump(mode="json"), given) if given else config_or_path
    else:
        cfg = load_config(config_or_path, given)
    resume_from = ("latest" if resume is True else str(resume)) if resume else None
    if dry_run:
        from lorakit.training.loop import print_plan

        return print_plan(cfg)
    from lorakit.training.loop import train as train_run  # torch and peft: after the config is checked

    run_dir = train_run(cfg, resume=resume_from, overwrite=overwrite, resume_anyway=resume_anyway, on_setup=on_setup)
    return Run(run_dir)


def load(model: str, adapter: str | Path | None = None, dtype: str = "auto", device: str = "auto"):
    """A model and its tokenizer for your own code: `model` is a built-in name, folder or hub id;
    `adapter` a run folder or adapter folder applied on top (a PEFT model). With `model=None` and an
    adapter, the base is the run's own.

    Example:
        >>> model, tokenizer = lorakit.load("qwen3-tiny-random", adapter="runs/demo")
        >>> ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    """
    from lorakit.inference.engine import Engine

    engine = Engine.load(model, {"adapter": str(adapter)} if adapter else None, dtype=dtype, device=device)
    return engine.model, engine.tokenizer


def merge(run_or_adapter: "str | Path", out: "str | Path", *, dtype: str = "auto", overwrite: bool = False) -> Path:
    """Fold a run's LoRA adapter (or a bare adapter folder) into its base and save a plain Hugging Face
    model at `out` (atomically). `dtype`: auto (the base's), float32, bfloat16 or float16. Returns `out`.

    Example:
        >>> lorakit.merge("runs/demo", "runs/demo-merged")
        >>> AutoModelForCausalLM.from_pretrained("runs/demo-merged")   # or vLLM, unchanged
    """
    from lorakit.exporting.merge import merge as merge_adapter

    return merge_adapter(run_or_adapter, out, dtype=dtype, overwrite=overwrite)


def evaluate(run: "str | Path", **options) -> dict:
    """Compare a run's base and fine-tuned model: held-out loss, answers side by side, persona and
    retention scores. Writes eval.json and report.html into the run and returns what eval.json holds.
    `options` as `lorakit eval` (data, prompts, max_new_tokens, judge_url, judge_model, seed,
    persona_keywords, retention, max_prompts, lang).

    Example:
        >>> result = lorakit.evaluate("runs/demo", max_prompts=4, lang="zh")
        >>> result["retention"]["finetuned_right"], result["persona"]["finetuned_hits"]
    """
    from lorakit.eval.compare import evaluate as compare_run

    return compare_run(run, **options)


def benchmark(
    run: "str | Path",
    tasks: "str | list[str]",
    *,
    limit: float | None = None,
    num_fewshot: int | None = None,
    include_path: "str | Path | None" = None,
) -> dict:
    """Standard benchmarks through lm-evaluation-harness on a run's base and fine-tuned model
    (`lorakit eval --tasks`); adds them to eval.json and report.html and returns that section.

    Example:
        >>> lorakit.benchmark("runs/demo", "mmlu,cmmlu", limit=100)["results"]
    """
    from lorakit.eval.benchmarks import run_benchmarks

    return run_benchmarks(run, tasks, limit=limit, num_fewshot=num_fewshot, include_path=include_path)


def export(
    source: "str | Path",
    out: "str | Path",
    *,
    format: str = "gguf",
    quant: str = "q8_0",
    overwrite: bool = False,
    base_gguf: "str | Path | None" = None,
    quality_tokens: int = 256,
) -> Path:
    """Export a run (merged on the way), a merged folder or a model reference for llama.cpp, Ollama and
    LM Studio: `out` gets the .gguf, an Ollama Modelfile and a model card. Returns `out`.

    quant: f16, bf16, q8_0, or a K-quant (q6_k, q5_k_m, q4_k_m: llama.cpp's own quantizer from npm's
    @node-llama-cpp/linux-x64 3.22.1). format "gguf-lora" writes a run's adapter alone as a llama.cpp LoRA
    GGUF, for `base_gguf` (a lorakit export of the base) or beside the base exported at `quant`.
    quality_tokens: held-out answer tokens on which the quant is measured against float32 (0: skip).

    Example:
        >>> lorakit.export("runs/demo", "runs/demo-gguf", quant="q4_k_m")
        >>> # then: ollama create demo -f runs/demo-gguf/Modelfile
    """
    from lorakit.exporting import export_model

    return export_model(
        source, out, fmt=format, quant=quant, overwrite=overwrite, base_gguf=base_gguf, quality_tokens=quality_tokens
    )


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
        return evaluate(self.path, **kwargs)

    def benchmark(self, tasks: "str | list[str]", **kwargs) -> dict:
        """lm-eval `tasks` on base and fine-tuned model (see `lorakit.benchmark`); kwargs: limit,
        num_fewshot, include_path."""
        return benchmark(self.path, tasks, **kwargs)

    def merge(self, out: str | Path, dtype: str = "auto", overwrite: bool = False) -> Path:
        """Fold the adapter into the base and save a plain Hugging Face model at `out`."""
        return merge(self.path, out, dtype=dtype, overwrite=overwrite)

    def export(self, out: str | Path, *, quant: str = "q8_0", format: str = "gguf", overwrite: bool = False) -> Path:
        """The fine-tune as GGUF (merged on the way) with an Ollama Modelfile and a model card at `out`."""
        return export(self.path, out, format=format, quant=quant, overwrite=overwrite)

    def chat(
        self,
        prompt: str,
        *,
        system: str | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 0.8,
        top_k: int = 20,
        seed: int | None = None,
        thinking: bool = False,
    ) -> str:
        """One answer from base + adapter to `prompt` (the model loads once per Run). temperature 0 is greedy."""
        from lorakit.inference.engine import Engine, SamplingParams

        try:
            params = SamplingParams(
                temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens, seed=seed
            )
        except ValueError as e:
            raise LorakitError(f"sampling: {e}") from None
        if self._engine is None:
            self._engine = Engine.load(None, {"adapter": str(self.path)})
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return self._engine.answer(messages, params, adapter="adapter", thinking=thinking).text
