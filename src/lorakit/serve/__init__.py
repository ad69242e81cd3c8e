"""OpenAI-compatible serving: protocol models, handlers, the FastAPI app, a web page, and the engines' launchers.

`lorakit serve` (cli/serve.py, flags only) starts one of three: `builtin.run_builtin` loads one
`lorakit.inference.engine.Engine` (a base model plus named LoRA adapters) and serves it with FastAPI +
uvicorn; `vllm.run_vllm` and `llama_cpp.run_llama_cpp` build and run the equivalent engine command.
"""
