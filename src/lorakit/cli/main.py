"""The command line: one subcommand per pipeline stage, each a thin call into its stage module.

Heavy imports (torch, transformers) happen inside the stage functions, so `lorakit --help` is instant.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from lorakit import settings
from lorakit.errors import LorakitError

app = typer.Typer(
    help="LoRA fine-tuning of chat models: data -> train -> merge -> chat -> serve -> eval.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def train(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="run config YAML; key=value overrides may follow")],
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="continue the run in train.output_dir from its latest "
            "checkpoint, or from the checkpoint folder given right after --resume",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the plan (config, data, steps, memory) and exit")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing finished run directory")] = False,
    resume_anyway: Annotated[
        bool,
        typer.Option(
            "--resume-anyway",
            help="with --resume, continue even though settings that change training (data, model, lora, lr...) differ",
        ),
    ] = False,
    preset: Annotated[
        Optional[str],
        typer.Option("--preset", help="named overrides: low-memory (4-bit base on CUDA + gradient checkpointing)"),
    ] = None,
) -> None:
    """Fine-tune with LoRA. Example: lorakit train configs/demo.yaml train.lr=2e-4"""
    from lorakit import api
    from lorakit.config import parse_override

    overrides = list(ctx.args)
    resume_from = None
    if resume_anyway and not resume:
        raise LorakitError("--resume-anyway only applies together with --resume")
    if resume:  # `--resume PATH`: a bare word among the key=value overrides is the checkpoint
        paths = [a for a in overrides if "=" not in a]
        if len(paths) > 1:
            raise LorakitError(f"--resume takes one checkpoint folder, got {paths}")
        resume_from = paths[0] if paths else True
        overrides = [a for a in overrides if "=" in a]
    api.train(
        config,
        resume=resume_from or False,
        dry_run=dry_run,
        overwrite=overwrite,
        preset=preset,
        resume_anyway=resume_anyway,
        **dict(parse_override(a) for a in overrides),
    )


def merge(
    run_dir: Annotated[Path, typer.Argument(help="training run directory (or adapter folder)")],
    out: Annotated[Path, typer.Option("--out", help="where to write the merged model")],
    dtype: Annotated[
        str, typer.Option("--dtype", help="dtype of the merged weights: auto (the base's), float32, bfloat16, float16")
    ] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing output folder")] = False,
) -> None:
    """Merge a LoRA adapter into its base and save a plain Hugging Face model."""
    from lorakit import api

    api.merge(run_dir, out, dtype=dtype, overwrite=overwrite)


def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="training run directory")],
    data: Annotated[Optional[str], typer.Option("--data", help="held-out data (default: the run's eval split)")] = None,
    prompts: Annotated[
        Optional[Path], typer.Option("--prompts", help="JSON/JSONL/text file of prompts to compare")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="tokens per answer")] = 96,
    judge_url: Annotated[
        Optional[str], typer.Option("--judge-url", help="OpenAI-compatible endpoint of a judge model")
    ] = None,
    judge_model: Annotated[Optional[str], typer.Option("--judge-model", help="judge model name")] = None,
    seed: Annotated[int, typer.Option("--seed", help="seed for the sampled answers")] = 0,
    persona_keywords: Annotated[
        Optional[str], typer.Option("--persona-keywords", help="comma-separated persona name/keywords to score")
    ] = None,
    retention: Annotated[
        Optional[str], typer.Option("--retention", help="general questions file (default: the bundled set)")
    ] = None,
    max_prompts: Annotated[int, typer.Option("--max-prompts", help="prompts compared side by side")] = 8,
    lang: Annotated[
        Optional[str],
        typer.Option(
            "--lang",
            help="en or zh: the bundled retention and identity "
            "questions (default: data.language, else detected from the data)",
        ),
    ] = None,
    tasks: Annotated[
        Optional[str],
        typer.Option(
            "--tasks",
            help="lm-eval benchmarks instead, e.g. mmlu,cmmlu: base vs fine-tuned accuracy (see docs/eval.md)",
        ),
    ] = None,
    limit: Annotated[
        Optional[float], typer.Option("--limit", help="with --tasks: items per task (below 1: a fraction)")
    ] = None,
    num_fewshot: Annotated[
        Optional[int], typer.Option("--num-fewshot", help="with --tasks: few-shot examples per item")
    ] = None,
    include_path: Annotated[
        Optional[Path], typer.Option("--include-path", help="with --tasks: folder of task YAMLs")
    ] = None,
) -> None:
    """Compare base and fine-tuned model: loss, answers side by side, persona and retention scores;
    or, with --tasks, standard benchmarks through lm-evaluation-harness."""
    from lorakit.cli.eval import print_benchmarks, print_summary

    if tasks is not None:
        from lorakit.api import benchmark

        section = benchmark(run_dir, tasks, limit=limit, num_fewshot=num_fewshot, include_path=include_path)
        print_benchmarks(section, run_dir / "report.html")
        return
    from lorakit import api

    result = api.evaluate(
        run_dir,
        data=data,
        prompts=prompts,
        max_new_tokens=max_new_tokens,
        judge_url=judge_url,
        judge_model=judge_model,
        seed=seed,
        persona_keywords=persona_keywords,
        retention=retention,
        max_prompts=max_prompts,
        lang=lang,
    )
    print_summary(result, Path(result["run_dir"]) / "report.html")


def download(
    model_id: Annotated[str, typer.Argument(help="hub id, e.g. Qwen/Qwen3-4B")],
    source: Annotated[str, typer.Option("--source", help="hf or modelscope")] = "hf",
    cache_dir: Annotated[
        Optional[str], typer.Option("--cache-dir", help="cache folder (default $LORAKIT_CACHE or ~/.cache/lorakit)")
    ] = None,
) -> None:
    """Download a model into the cache (built-in names are materialised offline instead)."""
    from lorakit.models import BUILTIN_MODELS, resolve_model
    from lorakit.models import download as run_download

    path = (
        resolve_model(model_id, cache_dir=cache_dir)
        if model_id in BUILTIN_MODELS
        else run_download(model_id, source=source, cache_dir=cache_dir)
    )
    typer.echo(str(path))


def demo(
    out: Annotated[Path, typer.Option("--out", help="where the demo run goes")] = Path("runs/demo"),
    max_steps: Annotated[
        Optional[int], typer.Option("--max-steps", help="override the number of training steps")
    ] = None,
) -> None:
    """The whole pipeline on the bundled persona dataset and SmolLM2-135M-Instruct, on CPU."""
    from lorakit.demo import run_demo

    run_demo(out, max_steps=max_steps)


def version() -> None:
    """Print the lorakit version."""
    from lorakit import __version__

    typer.echo(__version__)


def _register() -> None:
    """Subcommands in pipeline order; stages with many flags define them in their own module."""
    from lorakit.cli.chat import chat_command
    from lorakit.cli.data import app as data_app
    from lorakit.cli.doctor import doctor_command
    from lorakit.cli.export import export_command
    from lorakit.cli.serve import serve_command

    app.add_typer(data_app, name="data", help="Load, validate, inspect and prepare datasets.")
    app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(train)
    app.command()(merge)
    app.command("export", help="Export a run or model to GGUF (llama.cpp, Ollama), with a Modelfile and a model card.")(
        export_command
    )
    app.command("chat", help="Chat with a model (and adapter) in the terminal, streaming.")(chat_command)
    app.command("serve", help="Serve a model over an OpenAI-compatible HTTP API.")(serve_command)
    app.command("eval")(evaluate)
    app.command()(download)
    app.command(
        "doctor",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        help="What this machine gives lorakit (torch, GPUs, CPU, engines) and whether CONFIG's run fits.",
    )(doctor_command)
    app.command()(demo)
    app.command()(version)


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: runs the app and turns user errors into one line and exit code 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _register()
    try:
        code = app(args=argv, standalone_mode=False)
    except LorakitError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except (typer.Exit, SystemExit) as e:
        code = getattr(e, "exit_code", None)
        sys.exit(code if code is not None else getattr(e, "code", 0))
    except Exception as e:  # usage errors and anything else: one line, never a traceback
        # typer 0.29 carries its own copy of click, so match its exceptions by shape, not class.
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            sys.exit(e.exit_code)
        if type(e).__name__ == "Abort":
            sys.exit(130)
        if settings.debug():
            raise
        typer.secho(
            f"error: {type(e).__name__}: {e} (set LORAKIT_DEBUG=1 for the traceback)", fg=typer.colors.RED, err=True
        )
        sys.exit(1)
    # In non-standalone mode click returns typer.Exit codes instead of exiting with them.
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
