"""GRPO rollouts through a generation server (`train.generation_server`), with the interface of
training/rollout.py's in-process `Rollout`: `generate(prompt_ids, progress)` returns the same grouped
`Completion`s, and the seed generator is the state a checkpoint keeps.

Why a server and not vLLM in this process: docs/grpo.md, "Generation on a GPU". How the adapter travels:
before a rollout, if the optimizer has stepped since the server last got the adapter, `AdapterSync` writes
the LoRA weights (and adapter_config.json, never the base) to a fresh folder under the run directory,
asks the server to load it under a new name, unloads the previous name and deletes its folder. Requests
then name that adapter as their `model`.

Exact resume and the same tokens as in-process: each completion is its own request with its own `seed`,
drawn from the checkpointed generator exactly as `Rollout` draws them, and the prompt goes as token ids
(the trainer's own rendering, no second tokenisation). lorakit's server samples a seeded request with the
same `Sampler` as the in-process rollout, so the two give the same completions
(tests/integration/test_train_grpo_server.py); vLLM's sampler is another one, so the same seeds give other
(equally distributed) tokens there, and the objective records which engine sampled (objectives/grpo.py).
"""

from __future__ import annotations

import os
import shutil
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable

import torch

from lorakit.atomic import atomic_dir
from lorakit.errors import LorakitError
from lorakit.training.generation_server import GenerationServer, Sampled
from lorakit.training.rollout import SEED_RANGE, Completion, RolloutSettings

# Requests in flight at once: vLLM batches whatever is in flight (continuous batching), and lorakit's
# server queues at most 64 (--max-queue) before answering 503.
IN_FLIGHT = 32
ADAPTER_DIR = "rollout_adapter"  # under the run directory; holds the adapter the server has now


class AdapterSync:
    """Keeps the server's copy of the adapter at the trainer's current optimizer step (`version()`)."""

    def __init__(self, server: GenerationServer, model, run_dir: Path, version: Callable[[], int]):
        self.server, self.model, self.version = server, model, version
        self.folder = Path(run_dir) / ADAPTER_DIR
        # A name no earlier process used: a server that outlived a killed run may still hold its names.
        self.prefix = f"lorakit-{Path(run_dir).name}-{uuid.uuid4().hex[:8]}"
        self.name: str | None = None
        self.loaded: int | None = None

    def current(self) -> str:
        """The server's name for the adapter as it is now, loading it first if the weights changed."""
        step = self.version()
        if self.name is not None and step == self.loaded:
            return self.name
        name = f"{self.prefix}-step{step}"
        path = self.folder / name
        with atomic_dir(path, overwrite=True) as tmp:
            self.model.save_pretrained(str(tmp))  # a PeftModel saves the LoRA matrices and adapter_config.json
        self.server.load_adapter(name, str(path.resolve()))
        old, self.name, self.loaded = self.name, name, step
        if old is not None:
            self.server.unload_adapter(old)
        self._remove_others(keep=name)
        return name

    def _remove_others(self, keep: str) -> None:
        # earlier steps' folders, and the temp folders of saves a kill interrupted
        for entry in self.folder.iterdir() if self.folder.is_dir() else ():
            if entry.name != keep:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)


class ServerRollout:
    """Samples completions through the server, with the adapter as the trainer has it now."""

    def __init__(
        self,
        sync: AdapterSync,
        settings: RolloutSettings,
        seed: int,
        decode: Callable[[list[int]], str],
        max_context: int,
    ):
        self.sync, self.server, self.settings = sync, sync.server, settings
        self.decode, self.max_context = decode, max_context
        self.rng = torch.Generator().manual_seed(seed)

    def generate(
        self, prompts: list[list[int]], progress: Callable[[int, int], None] | None = None
    ) -> list[Completion]:
        """`num_generations` completions per prompt, grouped as `Rollout.generate` groups them."""
        s = self.settings
        jobs = [(group, list(ids)) for group, ids in enumerate(prompts) for _ in range(s.num_generations)]
        seeds = torch.randint(0, SEED_RANGE, (len(jobs),), generator=self.rng).tolist()
        model = self.sync.current()
        bodies = [self._body(model, ids, seed) for (_, ids), seed in zip(jobs, seeds)]
        results = self._run(bodies, progress)
        return [
            Completion(group, ids, r.token_ids, self.decode(r.token_ids), r.finish_reason != "stop")
            for (group, ids), r in zip(jobs, results)
        ]

    def _body(self, model: str, ids: list[int], seed: int) -> dict:
        s = self.settings
        room = self.max_context - len(ids)
        if room < 1:
            raise ValueError(f"a prompt has {len(ids)} tokens; the context holds {self.max_context}")
        return {
            "model": model,
            "prompt": ids,
            "max_tokens": min(s.max_completion_length, room),
            "temperature": s.temperature,
            "top_p": s.top_p,
            "top_k": s.top_k or -1,  # -1 = off, as every vLLM version and lorakit's server take it
            "seed": seed,
            "n": 1,
            "return_token_ids": True,
            # the rollout trains on exactly what was sampled: no stop strings, the end-of-sequence token kept
        }

    def _run(self, bodies: list[dict], progress) -> list[Sampled]:
        """All requests, at most IN_FLIGHT at a time; the first failure cancels the rest and is raised."""
        results: list[Sampled | None] = [None] * len(bodies)
        pool = ThreadPoolExecutor(max_workers=max(1, min(IN_FLIGHT, len(bodies))), thread_name_prefix="rollout")
        failed = True
        try:
            pending = {pool.submit(self.server.complete, b): i for i, b in enumerate(bodies)}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    results[pending.pop(future)] = future.result()  # raises the request's error
                if progress:
                    progress(len(bodies) - len(pending), len(bodies))
            failed = False
        finally:
            pool.shutdown(wait=not failed, cancel_futures=True)  # on failure, do not wait for the others
        return results  # type: ignore[return-value]

    def state_dict(self) -> dict:
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.set_state(state["rng"])


def connect(url: str, model, run_dir: Path, model_path: Path, version: Callable[[], int]) -> tuple[AdapterSync, str]:
    """The adapter link to the server at `url` and the engine behind it ("vllm", "lorakit", ...), after
    checking that it serves the base this run trains (when its folder is visible here)."""
    server = GenerationServer(url)
    card = server.base_model()
    root = card.get("root")
    if isinstance(root, str) and os.path.isdir(root) and Path(root).resolve() != Path(model_path).resolve():
        raise LorakitError(
            f"train.generation_server: {url} serves {root}, but this run trains {model_path}; "
            f"start the server with --model {model_path}"
        )
    return AdapterSync(server, model, run_dir, version), str(card.get("owned_by") or "unknown")


def server_rollouts(setup, sampler, greedy, url: str) -> tuple[ServerRollout, ServerRollout, str]:
    """The GRPO objective's two rollouts (sampling, and greedy for the held-out eval) through the server at
    `url`, sharing one adapter link; plus the engine's name. `sampler` and `greedy` are the in-process
    rollouts, whose settings, decoding and context length these take over."""
    if setup.dist.world > 1:
        raise LorakitError("train.generation_server: one training process only for now; run without torchrun")
    sync, engine = connect(url, setup.model, setup.run_dir, setup.inputs.model_path, lambda: setup.state.step)
    decode, context = sampler.engine.decode, sampler.engine.max_context
    return (
        ServerRollout(sync, sampler.settings, sampler.rng.initial_seed(), decode, context),
        ServerRollout(sync, greedy.settings, 0, decode, context),
        engine,
    )
