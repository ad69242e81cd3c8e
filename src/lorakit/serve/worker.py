"""One generation thread per engine with a bounded waiting room.

Requests never touch the model from the event loop: each becomes a `Job` that the worker thread runs
to completion, one at a time, pushing `(choice index, Chunk)` events back into the request's asyncio
queue. So outputs never mix, the event loop stays free for other requests, and a cancelled job
(client gone) stops at the next token.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass

from lorakit.inference.engine import Chunk, Engine, SamplingParams

log = logging.getLogger("lorakit.serve")
_DONE = object()


class QueueFull(Exception):
    """Raised by `Worker.submit` when `max_queue` jobs are already waiting."""


class GenerationFailed(Exception):
    """Raised while iterating a Job whose generation crashed (the worker has logged the cause)."""


@dataclass
class Task:
    """One choice to generate: prompt, sampling parameters, adapter (None = base), choice index.

    `logprobs`: alternatives per token when log-probabilities are wanted (None: none); `score_prompt`:
    score the prompt's own tokens first (echo); `generate` False: score only (max_tokens 0).
    """

    prompt_ids: list[int]
    params: SamplingParams
    adapter: str | None
    index: int
    logprobs: int | None = None
    score_prompt: bool = False
    generate: bool = True


@dataclass
class PromptScores:
    """The event a `score_prompt` task sends before its chunks: log-probabilities of prompt tokens 2..n."""

    scores: list


class Job:
    """The tasks of one request and the queue their events arrive on; iterate it with `async for`."""

    def __init__(self, tasks: list[Task], loop: asyncio.AbstractEventLoop):
        self.tasks = tasks
        self.loop = loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop generating for this job (at the next token) or skip it if it is still waiting."""
        self.cancelled.set()

    def emit(self, item) -> None:
        """Hand an event to the request's event loop (called from the worker thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)
        except RuntimeError:  # the loop is closed: the server is shutting down
            self.cancelled.set()

    async def __aiter__(self):
        while True:
            item = await self.events.get()
            if item is _DONE:
                return
            if isinstance(item, GenerationFailed):
                raise item
            yield item


class Worker:
    """Runs jobs on one daemon thread in arrival order; at most `max_queue` jobs wait behind it."""

    def __init__(self, engine: Engine, max_queue: int):
        self.engine = engine
        self.max_queue = max_queue
        self._jobs: queue.Queue = queue.Queue()
        self._waiting = 0
        self._count_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="lorakit-generate", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Jobs admitted but not yet started."""
        return self._waiting

    def submit(self, tasks: list[Task]) -> Job:
        """Queue a job for the calling event loop; raises QueueFull when the waiting room is full."""
        with self._count_lock:
            if self._waiting >= self.max_queue:
                raise QueueFull(f"{self._waiting} requests are already waiting")
            self._waiting += 1
        job = Job(tasks, asyncio.get_running_loop())
        self._jobs.put(job)
        return job

    def stop(self) -> None:
        """Let the thread finish after the jobs already queued."""
        self._jobs.put(None)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._count_lock:
                self._waiting -= 1
            try:
                for task in job.tasks:
                    if job.cancelled.is_set():
                        break
                    self._generate(job, task)
                job.emit(_DONE)
            except Exception:  # report to the request; the worker itself keeps running
                log.exception("generation failed")
                job.emit(GenerationFailed("generation failed"))

    def _generate(self, job: Job, task: Task) -> None:
        if task.score_prompt:
            scores = self.engine.score([task.prompt_ids], task.adapter, top=task.logprobs or 0)[0]
            job.emit((task.index, PromptScores(scores)))
        if not task.generate:
            job.emit((task.index, Chunk("", "length", len(task.prompt_ids), 0, [])))
            return
        stream = self.engine.stream(task.prompt_ids, task.params, adapter=task.adapter, logprobs=task.logprobs)
        try:
            for chunk in stream:
                job.emit((task.index, chunk))
                if job.cancelled.is_set():
                    return
        finally:
            stream.close()  # frees the engine lock and KV cache even when cancelled mid-way
