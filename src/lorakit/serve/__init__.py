"""OpenAI-compatible serving: protocol models, handlers, the FastAPI app, a web page, and the vLLM launcher.

`lorakit serve` (command.py) loads one `lorakit.inference.engine.Engine` (a base model plus named LoRA
adapters) and serves it with FastAPI + uvicorn, or builds and runs the equivalent `vllm serve` command.
"""
