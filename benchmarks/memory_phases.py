"""Where a CPU training run's peak RSS goes: per phase, and glibc's heap at each phase's peak.

Runs `lorakit train` (method c of train_speed.py: the huanhuan-shaped set, LoRA r=8 on the seven
projections, batch 4 x accum 4) in this process while a thread samples /proc/self/status every 5 ms.
For each phase (start-up and tokenisation, model load, each optimizer step) it prints the peak RSS
(anonymous + file-backed) and, at that moment, glibc's own account (mallinfo2, all arenas): bytes in
use, bytes free but still resident in the heap, and bytes in separately mmapped chunks. A large "free"
column is fragmentation: memory the heap holds but could not reuse.

    .venv/bin/python benchmarks/memory_phases.py                                  # lorakit's defaults
    .venv/bin/python benchmarks/memory_phases.py --set train.fused=off            # peft's own forwards
    MALLOC_MMAP_THRESHOLD_=1048576 MALLOC_ARENA_MAX=1 .venv/bin/python benchmarks/memory_phases.py
    .venv/bin/python benchmarks/memory_phases.py --set train.pack_tokens=512      # any config override
    .venv/bin/python benchmarks/memory_phases.py --trim                           # malloc_trim after each step

glibc only (mallinfo2, glibc 2.33+); Linux only.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
    ]


class PhaseSampler:
    """Peak RSS per named phase, with glibc's heap figures at each peak (GiB)."""

    def __init__(self, period: float = 0.005):
        self._libc = ctypes.CDLL("libc.so.6")
        self._libc.mallinfo2.restype = _MallInfo2
        self.phase = "start-up"
        self.peaks: dict[str, dict] = {}
        self._period = period
        threading.Thread(target=self._run, daemon=True).start()

    def _rss(self) -> dict:
        out = {}
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("RssAnon", "RssFile")):
                    key, value = line.split(":")
                    out[key] = int(value.split()[0]) / 2**20
        return out

    def _run(self) -> None:
        while True:
            rss, phase = self._rss(), self.phase
            total = rss["RssAnon"] + rss["RssFile"]
            if total > self.peaks.get(phase, {}).get("rss", 0.0):
                m = self._libc.mallinfo2()
                self.peaks[phase] = {
                    "rss": total,
                    "anon": rss["RssAnon"],
                    "file": rss["RssFile"],
                    "heap_in_use": m.uordblks / 2**30,
                    "heap_free": m.fordblks / 2**30,
                    "mmapped": m.hblkhd / 2**30,
                }
            time.sleep(self._period)


def main() -> None:
    ap = argparse.ArgumentParser(description="peak RSS of a lorakit CPU training run, per phase")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--dtype", default="bfloat16", help="model.dtype (the tutorial's bf16 by default)")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override")
    ap.add_argument("--trim", action="store_true", help="malloc_trim(0) after every optimizer step (a lever probe)")
    args = ap.parse_args()

    sampler = PhaseSampler()
    os.environ.setdefault("LORAKIT_CACHE", str(HERE.parent / "tests" / ".cache"))
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    import lorakit

    sys.path.insert(0, str(HERE))
    import make_huanhuan_like
    from train_speed import SYSTEM, TARGETS

    data_file = HERE / "data" / "huanhuan_like.json"
    if not data_file.exists():
        make_huanhuan_like.write(data_file)
    work = Path(tempfile.mkdtemp(prefix="lorakit-memory-"))
    train_file = work / "train.json"
    records = json.loads(data_file.read_text(encoding="utf-8"))[: args.samples]
    train_file.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    raw = {
        "model": {"name": args.model, "dtype": args.dtype},
        "data": {"path": str(train_file), "system": SYSTEM},
        "lora": {"r": 8, "alpha": 32, "target_modules": TARGETS},
        "train": {
            "output_dir": str(work / "run"),
            "max_steps": args.steps,
            "batch_size": 4,
            "grad_accum": 4,
            "lr": 1e-4,
            "logging_steps": 1,
            "save_steps": args.steps + 1,
            "threads": args.threads,
            "device": "cpu",
        },
    }

    steps = [0]

    def on_step(*_):
        if args.trim:
            sampler._libc.malloc_trim(0)
        steps[0] += 1
        sampler.phase = f"step {steps[0] + 1}" if steps[0] < args.steps else "save and finish"

    def setup_done(setup):  # model, adapter and optimizer are built: what follows is the first step
        sampler.phase = "step 1"

    register_optimizer_step_post_hook(on_step)
    sampler.phase = "tokenise and load"
    t0 = time.perf_counter()
    lorakit.train(lorakit.load_config(raw, args.set), overwrite=True, on_setup=setup_done)
    seconds = time.perf_counter() - t0
    time.sleep(0.05)

    print(
        f"\n{args.model}, model.dtype {args.dtype}, {args.steps} steps of 16 samples, {args.threads} threads, "
        f"torch {torch.__version__}, overrides {args.set or 'none'}, trim {args.trim}, "
        f"env {[k for k in os.environ if k.startswith(('MALLOC_', 'LORAKIT_', 'GLIBC_'))] or 'none'}"
    )
    print("| phase | peak RSS (GiB) | anon | file | heap in use | heap free (resident) | mmapped |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for phase, p in sampler.peaks.items():
        print(
            f"| {phase} | {p['rss']:.2f} | {p['anon']:.2f} | {p['file']:.2f} | {p['heap_in_use']:.2f} | "
            f"{p['heap_free']:.2f} | {p['mmapped']:.2f} |"
        )
    print(
        f"ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB; train() took {seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
