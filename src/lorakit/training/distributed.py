"""Several processes under torchrun / accelerate launch.

Default: data parallel. Each rank runs its share of an optimizer step's micro-batches, then the adapter
gradients (small) are all-reduced; the frozen base is replicated. With `train.fsdp`, FSDP2's
`fully_shard` also shards the base: each decoder layer, then the root, and FSDP reduces the gradients.
"""

from __future__ import annotations

import os

import torch

from lorakit.errors import LorakitError
from lorakit.training.loss import LossModule


def pick_device(choice: str, dist: "Distributed") -> str:
    """train.device -> this process's device: its own GPU under torchrun, else the CPU."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise LorakitError("train.device: cuda requested but no CUDA GPU is visible")
    if choice == "cpu" or not torch.cuda.is_available():
        return "cpu"
    torch.cuda.set_device(dist.local_rank)
    return f"cuda:{dist.local_rank}"


def refuse_accelerate_sharding() -> None:
    """accelerate launch only sets these for accelerate.Accelerator, which lorakit's loop does not use:
    the run would silently train unsharded."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        raise LorakitError(
            "accelerate launch with a DeepSpeed config: lorakit does not use DeepSpeed and would not "
            "shard; launch with a plain multi-GPU config or torchrun, and set train.fsdp=true to shard"
        )
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        raise LorakitError(
            "accelerate launch with an FSDP config: lorakit shards with its own FSDP; launch with a "
            "plain multi-GPU config or torchrun and set train.fsdp=true"
        )


class Distributed:
    """This process's place in the run (rank, world) and the collectives the training loop needs."""

    def __init__(self, rank=0, world=1, local_rank=0, local_world=1):
        self.rank, self.world, self.local_rank, self.local_world = rank, world, local_rank, local_world
        self.fsdp = False

    @classmethod
    def from_env(cls) -> "Distributed":
        refuse_accelerate_sharding()
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as td

        if not td.is_initialized():
            # gloo next to nccl: the loss sums and stop flags are CPU tensors
            td.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
        return cls(
            td.get_rank(),
            world,
            int(os.environ.get("LOCAL_RANK", "0")),
            int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
        )

    def shard(self, model, fsdp: bool, device: str, neftune_alpha: float = 0.0) -> LossModule:
        """The module to compute losses with; under `fsdp` with several processes its parameters are
        sharded across ranks. Build the optimizer after this: sharding replaces the parameters."""
        root = LossModule(model, neftune_alpha)
        if not fsdp or self.world == 1:
            return root
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        layers = getattr(model.get_base_model().get_decoder(), "layers", None)
        if layers is None:
            raise LorakitError("train.fsdp: this model has no decoder `layers` list to shard; set train.fsdp=false")
        mesh = init_device_mesh(device.split(":")[0], (self.world,))
        for layer in layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(root, mesh=mesh)
        self.fsdp = True
        self.print(f"FSDP: {len(layers)} decoder layers and the root sharded across {self.world} processes")
        return root

    def share(self, micro: list) -> list[tuple[dict, int]]:
        """This rank's micro-batches, each with weight 1. Under FSDP every rank must run the same number of
        forwards (each one all-gathers), so a rank that is short repeats one with weight 0."""
        mine = [(mb, 1) for mb in micro[self.rank :: self.world]]
        if self.fsdp:
            mine += [(micro[0], 0)] * (-(-len(micro) // self.world) - len(mine))
        return mine

    def all_reduce_grads(self, params) -> None:
        if self.world == 1 or self.fsdp:  # FSDP reduce-scatters the gradients during backward
            return
        import torch.distributed as td

        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            td.all_reduce(p.grad)
            p.grad /= self.world

    def full_state(self, model, optimizer=None) -> dict | None:
        """Under FSDP, the whole adapter and optimizer state on rank 0 (None on the others); None without
        FSDP, where rank 0 holds everything. Collective: every rank must call it."""
        if not self.fsdp:
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        # only the trainable tensors: a full model state dict would gather the whole base into host memory
        adapter = {n: p.full_tensor().cpu() for n, p in model.named_parameters() if p.requires_grad}
        optim = (
            None
            if optimizer is None
            else get_optimizer_state_dict(
                model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )
        )
        return {"adapter": adapter, "optimizer": optim} if self.rank == 0 else None

    def sum(self, value: float) -> float:
        if self.world == 1:
            return value
        import torch.distributed as td

        t = torch.tensor([value], dtype=torch.float64)
        td.all_reduce(t)
        return float(t.item())

    def any(self, flag: bool) -> bool:
        """True on every rank if it is on one: under FSDP, saving a checkpoint is collective."""
        return self.sum(float(flag)) > 0 if self.fsdp else flag

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as td

            td.barrier()

    def print(self, *args) -> None:
        if self.rank == 0:
            print(*args, flush=True)


def load_full_state(model, optimizer, adapter: dict, optim_state: dict) -> None:
    """Put a full adapter and optimizer state (from `Distributed.full_state`) into a sharded model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(model, adapter, options=StateDictOptions(full_state_dict=True, strict=False))
    set_optimizer_state_dict(model, optimizer, optim_state, options=StateDictOptions(full_state_dict=True))
