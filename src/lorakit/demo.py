"""`lorakit demo`: the whole pipeline on the bundled persona data and the real SmolLM2-135M-Instruct.

train -> eval (base vs fine-tuned answers to held-out questions, persona and retention scores,
report.html) -> merge -> the commands to chat with and serve the result. A few minutes on 2 CPU cores.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

DEMO_DIR = Path(str(resources.files("lorakit") / "assets" / "demo"))


def run_demo(out: str | Path = "runs/demo", max_steps: int | None = None) -> Path:
    """Run every stage into `out` (run/, merged/) and print what changed; returns the run directory."""
    from lorakit.api import train
    from lorakit.config import load_config

    out = Path(out)
    run_dir, merged_dir = out / "run", out / "merged"
    overrides = [f"data.path={DEMO_DIR / 'persona.json'}", f"train.output_dir={run_dir}"]
    if max_steps:
        overrides.append(f"train.max_steps={max_steps}")
    cfg = load_config(DEMO_DIR / "demo.yaml", overrides)
    started = time.perf_counter()
    _banner(f"1/3 train: LoRA on {cfg.model.name} with {DEMO_DIR / 'persona.json'}")
    run = train(cfg, overwrite=True)
    trained = time.perf_counter()

    _banner("2/3 eval: the base model and the fine-tune answer held-out questions")
    result = run.eval(prompts=DEMO_DIR / "heldout.json", max_new_tokens=64, max_prompts=12)
    from lorakit.cli.eval import print_summary

    print_summary(result, run_dir / "report.html")
    _side_by_side(result["answers"])

    _banner("3/3 merge: adapter folded into the base weights")
    run.merge(merged_dir, overwrite=True)

    minutes = (time.perf_counter() - started) / 60
    print(f"\ndone in {minutes:.1f} min (training {(trained - started) / 60:.1f} min).")
    print(f"report:  {run_dir / 'report.html'}")
    print(f"curves:  {run_dir / 'plots'}")
    print("next:")
    print(f"  lorakit chat --adapter {run_dir}                 # chat with base + adapter")
    print(f"  lorakit chat --model {merged_dir}                # or with the merged model")
    print(f"  lorakit serve --model {merged_dir} --served-model-name tamsin   # OpenAI-compatible API")
    print(f"  lorakit serve --engine vllm --model {merged_dir} --print-command    # the vLLM command")
    print(f"  lorakit export {run_dir} --format gguf --out {out / 'gguf'}   # GGUF + Modelfile for llama.cpp/Ollama")
    return run_dir


def _banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def _side_by_side(answers: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="held-out questions: base vs fine-tuned (greedy)", show_lines=True, expand=True)
    table.add_column("question", ratio=2)
    table.add_column("base model", ratio=3)
    table.add_column("fine-tuned", ratio=3)
    for a in answers:
        table.add_row(a["prompt"], a["base"]["greedy"], a["finetuned"]["greedy"])
    Console(width=max(120, Console().width)).print(table)
