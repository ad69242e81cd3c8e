"""lorakit: LoRA fine-tuning of chat models, from dataset to OpenAI-compatible API.

The public API, one call per stage (imported lazily, so `import lorakit` and `lorakit --help` stay instant):

    import lorakit
    lorakit.data.validate("huanhuan.json")                    # data: problems per record
    lorakit.data.inspect("huanhuan.json", model="qwen3-0.6b") # token lengths, truncation
    run = lorakit.train("configs/demo.yaml", train={"max_steps": 50})   # -> Run
    run.metrics; run.plot(); run.eval(); run.chat("你是谁？"); run.merge("merged/")
    run.export("runs/demo-gguf")                                        # GGUF + Ollama Modelfile
    lorakit.merge("runs/demo", "merged/"); lorakit.evaluate("runs/demo"); lorakit.benchmark("runs/demo", "mmlu")
    model, tokenizer = lorakit.load("qwen3-0.6b", adapter=run.path)     # for your own code

The CLI's subcommands are thin calls of these functions.

Every user error raises `LorakitError` with the one-line message the CLI prints.
"""

__version__ = "0.1.0"

__all__ = [
    "train",
    "Run",
    "load",
    "merge",
    "evaluate",
    "benchmark",
    "export",
    "load_config",
    "plan_run",
    "data",
    "LorakitError",
    "__version__",
]

# name -> module that defines it
_LAZY = {
    "train": "lorakit.api",
    "load": "lorakit.api",
    "merge": "lorakit.api",
    "evaluate": "lorakit.api",
    "benchmark": "lorakit.api",
    "export": "lorakit.api",
    "Run": "lorakit.api",
    "load_config": "lorakit.config",
    "plan_run": "lorakit.training.plan",
    "LorakitError": "lorakit.errors",
}


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "data":
        return importlib.import_module("lorakit.data")
    raise AttributeError(f"module 'lorakit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
