"""The training stage: `train(cfg)` runs LoRA SFT into a run directory.

    loop         setup -> optimizer steps -> finish (the only module that drives a run)
    batching     samples -> packed rows or padded batches; step order
    attention    per-sample attention over packed rows
    loss         supervised-only loss, LM head in chunks
    fused        fused LoRA / SwiGLU / RMSNorm forwards (CPU)
    plan         sizes and the memory estimate behind --dry-run
    checkpoint   save, find, load and rotate checkpoints
    distributed  torchrun: data parallel and FSDP
    tracking     metrics.jsonl, SwanLab / TensorBoard / W&B, plots
"""


def __getattr__(name):
    # lazy: the submodules import torch, and `lorakit.training.batching` must not pull in the loop
    if name in ("train", "evaluate_loss"):
        from lorakit.training import loop

        return getattr(loop, name)
    raise AttributeError(name)
