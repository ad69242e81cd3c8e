"""The public API behind `import lorakit`: train a run, load a model for your own code.

The CLI's `lorakit train` is a thin call of `train` below; `Run` (lorakit.run) reads a run back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable


def train(config_or_path: "str | Path | dict | Any", *, resume: "bool | str" = False, overwrite: bool = False,
          dry_run: bool = False, preset: str | None = None, on_setup: Callable | None = None,
          resume_anyway: bool = False, **overrides):
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
    from lorakit.errors import LorakitError
    from lorakit.run import Run

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
    from lorakit.training.loop import train as run_train  # torch and peft: after the config is checked

    run_dir = run_train(cfg, resume=resume_from, overwrite=overwrite, resume_anyway=resume_anyway, on_setup=on_setup)
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
    from lorakit.exporting.merge import merge as run_merge

    return run_merge(run_or_adapter, out, dtype=dtype, overwrite=overwrite)


def evaluate(run: "str | Path", **options) -> dict:
    """Compare a run's base and fine-tuned model: held-out loss, answers side by side, persona and
    retention scores. Writes eval.json and report.html into the run and returns what eval.json holds.
    `options` as `lorakit eval` (data, prompts, max_new_tokens, judge_url, judge_model, seed,
    persona_keywords, retention, max_prompts, lang).

    Example:
        >>> result = lorakit.evaluate("runs/demo", max_prompts=4, lang="zh")
        >>> result["retention"]["finetuned_right"], result["persona"]["finetuned_hits"]
    """
    from lorakit.eval.compare import evaluate as run_eval

    return run_eval(run, **options)


def benchmark(run: "str | Path", tasks: "str | list[str]", *, limit: float | None = None,
              num_fewshot: int | None = None, include_path: "str | Path | None" = None) -> dict:
    """Standard benchmarks through lm-evaluation-harness on a run's base and fine-tuned model
    (`lorakit eval --tasks`); adds them to eval.json and report.html and returns that section.

    Example:
        >>> lorakit.benchmark("runs/demo", "mmlu,cmmlu", limit=100)["results"]
    """
    from lorakit.eval.benchmarks import run_benchmarks

    return run_benchmarks(run, tasks, limit=limit, num_fewshot=num_fewshot, include_path=include_path)


def export(source: "str | Path", out: "str | Path", *, format: str = "gguf", quant: str = "q8_0",
           overwrite: bool = False, base_gguf: "str | Path | None" = None, quality_tokens: int = 256) -> Path:
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

    return export_model(source, out, fmt=format, quant=quant, overwrite=overwrite, base_gguf=base_gguf,
                        quality_tokens=quality_tokens)
