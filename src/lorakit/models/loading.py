"""Load a resolved model folder into transformers objects."""

from __future__ import annotations

from pathlib import Path

from lorakit.errors import LorakitError

_DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16",
           "half": "float16", "float32": "float32", "fp32": "float32", "float": "float32"}  # fmt: skip


def torch_dtype(dtype: str, device: str):
    """Map a dtype name to a torch dtype; "auto" is bfloat16 on CUDA and float32 elsewhere."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if dtype not in _DTYPES:
        raise LorakitError(f"unknown dtype {dtype!r}; choose one of: auto, bfloat16, float16, float32")
    return getattr(torch, _DTYPES[dtype])


def load_tokenizer_from(path: Path):
    """AutoTokenizer for `path`, with a pad token guaranteed (falls back to the eos token)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise LorakitError(
                f"tokenizer in {path} has neither a pad nor an eos token; set pad_token in tokenizer_config.json"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model_from(path: Path, dtype: str, device: str, quantize: str = "none"):
    """AutoModelForCausalLM for `path` in `dtype` on `device`, with SDPA attention (eager where the model
    class refuses SDPA, as Gemma2 and GPT-OSS do), in eval mode.

    quantize "4bit"/"8bit" loads the frozen base through bitsandbytes (QLoRA); CUDA only.
    """
    from transformers import AutoModelForCausalLM

    model_class = causal_lm_class(path)
    attn = "sdpa" if getattr(model_class, "_supports_sdpa", False) else "eager"
    kwargs = {"dtype": torch_dtype(dtype, device), "attn_implementation": attn}
    if quantize != "none":
        kwargs["quantization_config"] = _bnb_config(quantize, kwargs["dtype"], device)
    if device != "cpu":
        # Place weights straight on the accelerator instead of staging a full copy in host memory.
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    return model.eval()


def causal_lm_class(path: Path):
    """The transformers causal-LM class for the model in `path`; a one-line refusal for a model lorakit
    cannot train as a text-only causal LM (encoder-decoder, vision-language, anything else)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        config = AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LorakitError(f"{path}: cannot read the model's config.json: {first[:200]}") from None
    kind = getattr(config, "model_type", "?")
    if getattr(config, "is_encoder_decoder", False):
        raise LorakitError(f"{path}: {kind} is an encoder-decoder model; lorakit trains decoder-only causal LMs")
    if any(hasattr(config, a) for a in ("vision_config", "vision_tower", "audio_config")):
        raise LorakitError(
            f"{path}: {kind} is a vision/audio-language model and lorakit has no text-only path for "
            f"it; use the family's text-only checkpoint"
        )
    try:
        return MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        raise LorakitError(
            f"{path}: {kind} has no causal-LM class in transformers; lorakit trains causal LMs"
        ) from None


def _bnb_config(quantize: str, compute_dtype, device: str):
    """4-bit NF4 (double quantised, the QLoRA recipe) or 8-bit weights for the frozen base."""
    import importlib.util

    if not str(device).startswith("cuda"):
        raise LorakitError(f"model.quantize: {quantize} (QLoRA) needs a CUDA GPU; set model.quantize=none on CPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        from lorakit.install import install_command

        raise LorakitError(
            f"model.quantize: bitsandbytes is not installed ({install_command('bitsandbytes', 'install-gpu')})"
        )
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )
