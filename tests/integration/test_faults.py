"""Fault injection through the real CLI on qwen3-tiny-random: what a careless user, a crash, a full disk,
a second run, a diverging run or a damaged checkpoint does to a run must never lose data or end "completed".

Bounded in time: a few shared runs (module fixtures), short step counts, processes started side by side.
Each test names the issue item it proves (docs/reliability.md lists them).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from lorakit_cli import REPO, alpaca_file, cli_env, lorakit, write_config
from safetensors.torch import load_file, save_file

STEPS = 12  # the short run every resume is compared with


def config(tmp: Path, name: str, data: Path, **train) -> Path:
    t = {
        "output_dir": str(tmp / name),
        "max_steps": STEPS,
        "batch_size": 1,
        "grad_accum": 2,
        "logging_steps": 1,
        "save_steps": 1,
        "precision": "fp32",
        "threads": 1,
        **train,
    }
    return write_config(
        tmp / f"{name}.yaml",
        model={"name": "qwen3-tiny-random"},
        data={"path": str(data), "eval_split": 4},
        lora={"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": "all-linear"},
        train=t,
    )


def start(*args, **kw) -> subprocess.Popen:
    """`lorakit ARGS` in the background, its output (stdout and stderr) in a file: a pipe nobody reads
    would stall a long run."""
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lorakit", *map(str, args)],
        env=cli_env(),
        cwd=kw.get("cwd", REPO),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=kw.get("preexec_fn"),
    )
    proc.log = log
    return proc


def output(proc: subprocess.Popen) -> str:
    proc.log.seek(0)
    return proc.log.read()


def finish(proc: subprocess.Popen, timeout: float = 900) -> tuple[int, str]:
    proc.wait(timeout=timeout)
    return proc.returncode, output(proc)


def one_line_error(code_err: tuple[int, str], code: int, *needles: str) -> str:
    rc, err = code_err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert rc == code and len(lines) == 1, f"exit {rc}\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.returncode}) first:\n{output(proc)[-3000:]}")
        time.sleep(0.01)
    raise AssertionError("timed out")


def checkpoints(run: Path) -> list[Path]:
    from lorakit.training.checkpoint import checkpoint_dirs

    return checkpoint_dirs(run)


def summary(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return alpaca_file(tmp_path_factory.mktemp("data") / "persona.json", n=40)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data) -> Path:
    """An uninterrupted run of STEPS steps: what every interrupted run must end up equal to."""
    tmp = tmp_path_factory.mktemp("straight")
    lorakit("train", config(tmp, "run", data))
    return tmp / "run"


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, data):
    """A long run that two other runs try to share while it trains (item 2), then stopped with SIGTERM
    (item 12); returns (run folder, its config, the SIGTERM exit and stderr)."""
    tmp = tmp_path_factory.mktemp("stopped")
    cfg = config(tmp, "run", data, max_steps=100000, save_steps=2, logging_steps=10)
    run = tmp / "run"
    a = start("train", cfg)
    try:
        wait_for(lambda: len(checkpoints(run)) >= 1, a)
        refusals = [finish(start("train", cfg, "--overwrite"))]
        assert a.poll() is None, "the first run ended while the others were refused"
        a.send_signal(signal.SIGTERM)
        stopped_at = finish(a)
    finally:
        if a.poll() is None:
            a.kill()
    return run, cfg, refusals, stopped_at


# ---- item 1: --overwrite replaces only what lorakit wrote ---------------------------------------------------
def test_overwrite_never_deletes_what_lorakit_did_not_write(tmp_path, data):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    (mine / "config.yaml").write_text("# the user's own config\n")  # does not make it a run
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    cfg = config(tmp_path, "c", data)
    procs = [
        start("train", cfg, "--overwrite", f"train.output_dir={mine}"),
        start("train", cfg, "--overwrite", "train.output_dir=.", cwd=cwd),
    ]
    results = [finish(p) for p in procs]
    one_line_error(results[0], 2, "not written by lorakit")
    one_line_error(results[1], 2, "refusing to write into")
    assert (mine / "thesis.txt").read_text() == "years of work"
    assert (mine / "config.yaml").read_text() == "# the user's own config\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "cwd", "mine"]
    assert list(cwd.iterdir()) == []


# ---- items 1, 4, 10: merge and serve never destroy their input or load a broken adapter --------------------
def test_merge_and_serve_refuse_what_would_destroy_or_mislead(tmp_path, straight):
    nan_run = tmp_path / "nan"
    shutil.copytree(straight, nan_run)
    weights = nan_run / "adapter" / "adapter_model.safetensors"
    save_file({k: torch.full_like(v, float("nan")) for k, v in load_file(str(weights)).items()}, str(weights))
    bare = tmp_path / "bare"
    shutil.copytree(straight / "adapter", bare)
    (bare / "adapter_model.safetensors").unlink()
    before = {p.relative_to(straight): p.read_bytes() for p in straight.rglob("*") if p.is_file()}
    procs = [
        start("merge", straight, "--out", straight / "adapter" / "merged", "--overwrite"),
        start("merge", nan_run, "--out", tmp_path / "m1"),
        start("serve", "--lora-modules", f"x={bare}", "--port", "9"),
    ]
    results = [finish(p) for p in procs]
    one_line_error(results[0], 2, "is, holds or lies inside")
    one_line_error(results[1], 2, "NaN or infinite")
    one_line_error(results[2], 2, "adapter weights file missing", "never looked up on the hub")
    after = {p.relative_to(straight): p.read_bytes() for p in straight.rglob("*") if p.is_file()}
    assert after == before
    assert not (tmp_path / "m1").exists()
    # best_checkpoint (item 13) names a folder that exists
    best = summary(straight)["best_checkpoint"]
    assert best is None or Path(best).is_dir(), best


# ---- item 2 and 12: one writer per run folder; SIGTERM checkpoints like Ctrl-C ------------------------------
def test_a_second_run_is_refused_and_sigterm_checkpoints(stopped):
    run, _, refusals, stopped_at = stopped
    for r in refusals:
        one_line_error(r, 2, "in use by another lorakit run (pid")
    rc, err = stopped_at
    assert rc == 143, err[-3000:]
    assert "SIGTERM: stopping after this step" in err and "checkpoint saved" in err
    assert "Traceback" not in err
    step = int(err.split("interrupted at step ")[1].split(";")[0])
    assert checkpoints(run)[-1].name == f"checkpoint-{step}"
    assert not (run / "run.json").exists()
    from lorakit.training.checkpoint import verify

    assert all(verify(c) is None for c in checkpoints(run))


# ---- item 3: a resume that changes the mathematics is refused, naming each key; every resume recorded -------
def _other_base(tmp: Path) -> Path:
    """qwen3-tiny-random's shapes and config, slightly different weights."""
    from lorakit.models import resolve_model

    src = resolve_model("qwen3-tiny-random")
    dst = tmp / "other-base"
    shutil.copytree(src, dst)
    for f in dst.glob("*.safetensors"):
        tensors = load_file(str(f))
        name = sorted(tensors)[0]
        tensors[name] = tensors[name] + 1e-3
        save_file(tensors, str(f), metadata={"format": "pt"})
    return dst


def test_resume_refuses_changed_training(tmp_path, stopped, data):
    run, cfg, _, _ = stopped
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    changed_data = tmp_path / "changed.json"
    rows = json.loads(data.read_text())
    rows[0]["output"] = "a different answer"
    changed_data.write_text(json.dumps(rows, ensure_ascii=False))
    changes = {
        "lora.alpha": "32",
        "lora.r": "4",
        "train.batch_size": "2",
        "train.seed": "7",
        "train.lr": "3e-4",
        "train.attention": "fallback",
        "train.fused": "off",
        "data.path": str(changed_data),
        "model.name": str(_other_base(tmp_path)),
    }
    before = sorted(p.name for p in copy.rglob("*"))
    line = one_line_error(
        finish(start("train", cfg, "--resume", f"train.output_dir={copy}", *(f"{k}={v}" for k, v in changes.items()))),
        2,
        "--resume-anyway",
    )
    for key in [
        "lora.alpha: 16.0 -> 32.0",
        "lora.r: 8 -> 4",
        "train.batch_size: 1 -> 2",
        "train.seed: 42 -> 7",
        "train.lr",
        'train.attention: "auto" -> "fallback"',
        'train.fused: "auto" -> "off"',
        "data content",
        "base model: weights_fingerprint",
    ]:
        assert key in line, line
    assert sorted(p.name for p in copy.rglob("*")) == before  # nothing rewritten


# ---- items 8 and 3: damaged checkpoints are detected by checksum, resume falls back and says why; safe keys
# may change, --resume-anyway continues, and run.json records the resume --------------------------------------
def test_resume_skips_a_damaged_newest_checkpoint(tmp_path, stopped):
    run, cfg, _, _ = stopped
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    newest, older = checkpoints(copy)[-1], checkpoints(copy)[-2]
    state = newest / "training_state.pt"
    blob = bytearray(state.read_bytes())
    blob[len(blob) // 2 : len(blob) // 2 + 256] = bytes(256)  # zeroed bytes, same size
    state.write_bytes(bytes(blob))
    (copy / "checkpoints" / ".checkpoint-99.abc.tmp").mkdir()  # a save killed long ago (item 13)
    step = int(older.name.split("-")[1])
    out = lorakit(
        "train",
        cfg,
        "--resume",
        "--resume-anyway",
        f"train.output_dir={copy}",
        f"train.max_steps={step + 1}",
        "tracking.project=other",
        "train.logging_steps=1",
        "train.save_total_limit=3",
    )
    assert f"skipping {newest}: training_state.pt does not match its checksum" in out.stdout + out.stderr
    assert f"resuming from {older}" in out.stdout + out.stderr
    s = summary(copy)
    assert s["status"] == "completed" and s["steps"] == step + 1
    (record,) = s["resumes"]
    assert record["checkpoint"] == str(older) and record["step"] == step and record["resume_anyway"]
    assert record["changed"] == [f"train.max_steps: 100000 -> {step + 1}"]  # the safe keys are not listed
    assert not list((copy / "checkpoints").glob(".checkpoint-*"))


# ---- item 9: a full disk says so, where, and that the previous checkpoint is intact -------------------------
@contextlib.contextmanager
def small_disk(tmp: Path, need: int):
    """(folder, preexec_fn): a real 4 MiB tmpfs where mounting works (root), else a per-file size limit."""
    mnt = tmp / "disk"
    mnt.mkdir()
    mounted = (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode
        == 0
        if os.geteuid() == 0
        else False
    )
    try:
        if mounted:
            yield mnt, None, "tmpfs"
        else:

            def limit():
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
                resource.setrlimit(resource.RLIMIT_FSIZE, (need, need))

            yield mnt, limit, "ulimit"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, stopped):
    run, cfg, _, _ = stopped
    state_bytes = (checkpoints(run)[-1] / "training_state.pt").stat().st_size
    with small_disk(tmp_path, state_bytes // 2) as (disk, preexec, kind):
        copy = disk / "run"
        shutil.copytree(run, copy)
        last = checkpoints(copy)[-1]
        if kind == "tmpfs":  # leave room for logs and config, not for a checkpoint
            free = shutil.disk_usage(disk).free
            slack = 64 * 1024 + (copy / "metrics.jsonl").stat().st_size
            (disk / "filler").write_bytes(bytes(max(0, free - slack)))
        step = int(last.name.split("-")[1])
        rc_err = finish(
            start(
                "train",
                cfg,
                "--resume",
                "--resume-anyway",
                f"train.output_dir={copy}",
                f"train.max_steps={step + 10}",
                preexec_fn=preexec,
            )
        )
        line = one_line_error(
            rc_err, 2, "disk full while writing", str(copy / "checkpoints"), f"the previous checkpoint {last} is intact"
        )
        assert f"checkpoint-{step + 2 - step % 2}" in line  # the next save (train.save_steps=2)
        from lorakit.training.checkpoint import verify

        assert verify(last) is None and checkpoints(copy)[-1] == last
        assert not list((copy / "checkpoints").glob(".checkpoint-*")) and not (copy / "run.json").exists()


# ---- item 4: a diverging run stops at the bad step and is never "completed" --------------------------------
def test_a_diverging_run_stops_and_is_never_completed(tmp_path, data):
    cfg = config(tmp_path, "run", data, lr=1e30)
    run = tmp_path / "run"
    line = one_line_error(finish(start("train", cfg)), 1, "training diverged at step", "last good checkpoint")
    s = summary(run)
    assert s["status"] == "diverged" and f"step {s['step']}" in line
    assert s["last_good_checkpoint"] and Path(s["last_good_checkpoint"]).is_dir()
    assert f"checkpoint-{s['step'] - 1}" in s["last_good_checkpoint"]
    assert not (run / "adapter").exists()


# ---- items 5, 8, 12, 13: SIGKILL around saves, again and again; the run still ends bit-exact ----------------
def test_kill_loop_around_saves_resumes_bit_exact(tmp_path, data, straight):
    cfg = config(tmp_path, "run", data)
    run = tmp_path / "run"
    rng = random.Random(0)
    kills = 0
    for attempt in range(3):
        args = ["train", cfg] + (["--resume", "tracking.project=p", "train.save_total_limit=3"] if attempt else [])
        proc = start(*args)
        seen = {c.name for c in checkpoints(run)}
        try:
            wait_for(lambda seen=seen: {c.name for c in checkpoints(run)} - seen or (run / "run.json").exists(), proc)
        except AssertionError:
            if proc.returncode == 0:
                break
            raise
        time.sleep(rng.uniform(0, 0.15))  # somewhere in the next step or its save
        if proc.poll() is not None:
            break
        proc.kill()
        proc.wait()
        kills += 1
        from lorakit.training.checkpoint import verify

        assert all(verify(c) is None for c in checkpoints(run)), "a killed save left a damaged checkpoint"
    assert kills >= 1
    if not (run / "run.json").exists():
        lorakit("train", cfg, "--resume")
    s = summary(run)
    assert s["status"] == "completed" and s["steps"] == STEPS and len(s["resumes"]) >= 1
    assert all(not r["changed"] for r in s["resumes"])
    a, b = (
        load_file(str(straight / "adapter" / "adapter_model.safetensors")),
        load_file(str(run / "adapter" / "adapter_model.safetensors")),
    )
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    assert not list(run.rglob(".checkpoint-*"))
