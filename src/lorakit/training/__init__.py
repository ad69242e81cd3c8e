"""The training stage: `train(cfg)` runs LoRA SFT into a run directory.

loop         setup -> run_steps -> finish, state in TrainState (the only module that drives a run)
batching     samples -> packed rows or padded batches; step order
fastpaths    which attention and fused forwards a run takes, from the config and the model
attention    per-sample attention over packed rows
loss         supervised-only loss, LM head in chunks; held-out loss (also the eval stage's)
fused        fused LoRA / SwiGLU / RMSNorm forwards (CPU)
plan         plan_run(cfg): sizes and the memory estimate behind --dry-run
checkpoint   save, find, load and rotate checkpoints
distributed  torchrun: data parallel and FSDP
tracking     metrics.jsonl, SwanLab / TensorBoard / W&B, plots
"""


def __getattr__(name):
    # lazy: the submodules import torch, and `lorakit.training.batching` must not pull in the loop
    if name == "train":
        from lorakit.training import loop

        return loop.train
    if name == "evaluate_loss":
        from lorakit.training import loss

        return loss.evaluate_loss
    if name == "plan_run":
        from lorakit.training import plan

        return plan.plan_run
    raise AttributeError(name)
