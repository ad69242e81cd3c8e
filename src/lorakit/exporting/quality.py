"""What a quant costs, measured on the run's own held-out answers: top-1 next-token agreement with the float32
model and the change in held-out loss (and perplexity).

The reference is the float32 model folder the export was written from (a run is merged in float32 first).
The exported file is read back with transformers' GGUF loader, whose dequantization is llama.cpp's own
gguf-py, and run in float32 on the same tokens: this measures what the stored weights lost. llama.cpp's
kernels also round the activations (to 8 bits for K-quant dot products); the export tests check the
agreement inside llama.cpp itself (tests/unit/export/test_export_kquants.py).

Scored positions are the answer tokens (labels != -100) of the held-out conversations, as `lorakit eval`'s
loss counts them, up to a token budget so that measuring stays a few seconds on a 2-core CPU.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lorakit.errors import LorakitError

DEFAULT_TOKENS = 256  # answer tokens scored per export; docs/export.md gives the time this costs
BUILTIN_TEXT = "assets/demo/heldout.json"  # for a bare model: the demo's held-out conversations


@dataclass
class Reference:
    """The float32 model's view of the scored positions."""

    samples: list[tuple[list[int], list[int]]]  # (input ids, positions scored) per conversation
    targets: list[int]  # the true next token at each scored position
    top1: list[int]
    margins: list[float]  # top-1 minus top-2 logit
    nll: list[float]
    source: str  # where the text came from, for the card


@dataclass
class Quality:
    quant: str
    agreement: float
    tokens: int
    loss_fp32: float
    loss: float
    miss_margins: list[float]  # the float32 top-2 margins where the argmax changed
    source: str

    @property
    def loss_change(self) -> float:
        return self.loss - self.loss_fp32

    def line(self) -> str:
        return (
            f"quality ({self.quant} vs float32, {self.tokens} held-out answer tokens from {self.source}): "
            f"top-1 agreement {self.agreement:.1%}, loss {self.loss_fp32:.4f} -> {self.loss:.4f} "
            f"({self.loss_change:+.4f}), perplexity {math.exp(self.loss_fp32):.3f} -> {math.exp(self.loss):.3f}"
        )

    def as_dict(self) -> dict:
        return {"quant": self.quant, "agreement": self.agreement, "tokens": self.tokens, "source": self.source,
                "loss_fp32": self.loss_fp32, "loss": self.loss, "loss_change": self.loss_change,
                "perplexity_fp32": math.exp(self.loss_fp32), "perplexity": math.exp(self.loss)}  # fmt: skip


def heldout(model_dir: Path, run, budget: int) -> tuple[list[tuple[list[int], list[int]]], str]:
    """Up to `budget` answer positions from the run's held-out split (eval_path or eval_split), else
    from the demo's held-out conversations; returns ([(ids, scored positions)], source)."""
    from transformers import AutoTokenizer

    from lorakit.data.template import tokenize_conversation

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    convs, source, data = [], BUILTIN_TEXT.rsplit("/", 1)[-1] + " (lorakit's built-in held-out set)", None
    if run is not None and run.config is not None:
        from lorakit.data.prepared import split_conversations

        data = run.config.data
        try:
            convs = split_conversations(data)[1]
        except LorakitError:
            convs = []  # the data moved since training; the built-in set stands in, and the card says so
        if convs:
            source = f"the run's held-out split ({data.eval_path or f'eval_split {data.eval_split}'})"
    if not convs:
        from lorakit.data.load import load_conversations

        with resources.as_file(resources.files("lorakit").joinpath(BUILTIN_TEXT)) as path:
            convs = load_conversations(str(path))
    out, total = [], 0
    for conv in convs:
        sample = tokenize_conversation(tokenizer, conv, thinking=data.thinking if data else "off",
                                       train_on=data.train_on if data else "all",
                                       max_length=data.max_length if data else 1024)  # fmt: skip
        ids, labels = sample["input_ids"], sample["labels"]
        # position t predicts token t+1: it is scored when that token is an answer token
        scored = [t for t in range(len(ids) - 1) if labels[t + 1] != -100][: budget - total]
        if scored:
            out.append((ids, scored))
            total += len(scored)
        if total >= budget:
            break
    return out, source


def reference(model_dir: Path, run, budget: int = DEFAULT_TOKENS, adapter_dir: Path | None = None) -> Reference:
    """The float32 model (with `adapter_dir`'s LoRA applied unmerged, for an adapter export) on held-out answers."""
    import torch
    from transformers import AutoModelForCausalLM

    samples, source = heldout(model_dir, run, budget)
    with _quiet():
        model = _with_adapter(AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32), adapter_dir)
    ref = Reference(samples, [], [], [], [], source)
    for ids, scored in samples:
        logits = _logits(model, ids, scored)
        top2 = logits.topk(2, dim=-1).values
        targets = torch.tensor([ids[t + 1] for t in scored])
        ref.targets += targets.tolist()
        ref.top1 += logits.argmax(-1).tolist()
        ref.margins += (top2[:, 0] - top2[:, 1]).tolist()
        ref.nll += _nll(logits, targets).tolist()
    return ref


def measure(gguf_file: Path, model_dir: Path, ref: Reference, quant: str, adapter_dir: Path | None = None) -> Quality:
    """Top-1 agreement and loss of `gguf_file` (plus `adapter_dir`'s LoRA in float32, as llama.cpp applies
    an adapter GGUF) against `ref` (from the float32 `model_dir`)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if not ref.targets:
        raise LorakitError(f"{model_dir}: no held-out answer tokens to measure the quant on")
    # transformers' GGUF loader reads the weights; the architecture comes from the float32 folder's config
    # (its GGUF config reader misses Qwen3's head_dim)
    with _quiet():
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_file.parent),
            gguf_file=gguf_file.name,
            dtype=torch.float32,
            config=AutoConfig.from_pretrained(str(model_dir)),
        )
    model = _with_adapter(model, adapter_dir)
    top1, nll = [], []
    for ids, scored in ref.samples:
        logits = _logits(model, ids, scored)
        top1 += logits.argmax(-1).tolist()
        nll += _nll(logits, torch.tensor([ids[t + 1] for t in scored])).tolist()
    misses = [m for a, b, m in zip(top1, ref.top1, ref.margins) if a != b]
    n = len(ref.targets)
    return Quality(quant, 1 - len(misses) / n, n, sum(ref.nll) / n, sum(nll) / n, misses, ref.source)


@contextlib.contextmanager
def _quiet():
    """transformers' loading bars and deprecation warnings are noise in export's output (one line per stage)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf_logging.enable_progress_bar()


def _with_adapter(model, adapter_dir: Path | None):
    if adapter_dir is not None:
        from peft import PeftModel

        from lorakit.models.lora import peft_quietly

        with peft_quietly():
            model = PeftModel.from_pretrained(model, str(adapter_dir))
    return model.eval()


def _logits(model, ids: list[int], scored: list[int]):
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, scored].float()


def _nll(logits, targets):
    import torch

    return -torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0]
