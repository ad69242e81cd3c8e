"""The export stage: a fine-tune as GGUF for llama.cpp, Ollama and LM Studio, with a Modelfile and a model card."""

from lorakit.exporting.pipeline import export_model

__all__ = ["export_model"]
