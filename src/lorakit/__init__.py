"""lorakit: LoRA fine-tuning of chat models, from dataset to OpenAI-compatible API."""

__version__ = "0.1.0"
