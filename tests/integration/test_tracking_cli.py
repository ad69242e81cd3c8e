"""Tracking for real: SwanLab in local mode (no login, no network) and TensorBoard event files,
plus Ctrl-C saving a checkpoint that --resume continues from."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lorakit_cli import REPO, alpaca_file, cli_env, lorakit, write_config


def config(tmp: Path, name: str, backends: list[str], **train) -> Path:
    data = alpaca_file(tmp / "data.json", n=16)
    t = {
        "output_dir": str(tmp / name),
        "max_steps": 4,
        "batch_size": 2,
        "grad_accum": 1,
        "logging_steps": 1,
        "save_steps": 2,
        "threads": 1,
        **train,
    }
    return write_config(
        tmp / f"{name}.yaml",
        model={"name": "qwen3-tiny-random"},
        data={"path": str(data)},
        lora={"r": 4},
        train=t,
        tracking={"backends": backends, "project": "lorakit-test"},
    )


def test_swanlab_local_and_tensorboard_record_the_run(tmp_path):
    lorakit("train", config(tmp_path, "tracked", ["swanlab", "tensorboard"]))
    run = tmp_path / "tracked"
    swanlog = run / "swanlog"
    assert swanlog.is_dir() and any(swanlog.rglob("*")), "SwanLab wrote no local run"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3, 4]
    # the local SwanLab run (what `swanlab watch` shows) holds the same loss series as metrics.jsonl
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    series = [[json.loads(x)["data"] for x in f.read_text().splitlines()] for f in swanlog.glob("run-*/logs/*/*.log")]
    assert any(s == pytest.approx(losses) for s in series), series


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tmp_path):
    cfg = config(tmp_path, "interrupted", [], max_steps=400, save_steps=1000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lorakit", "train", str(cfg)],
        env=cli_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / "interrupted" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert "checkpoint saved" in out + err and "Traceback" not in err
    ckpts = list((tmp_path / "interrupted" / "checkpoints").glob("checkpoint-*"))
    assert len(ckpts) == 1
    # a shorter run changes the LR schedule, which resume refuses unless told: --resume-anyway
    proc = lorakit(
        "train", cfg, "--resume", "--resume-anyway", "train.max_steps=" + str(int(ckpts[0].name.split("-")[1]) + 2)
    )
    assert "train.max_steps" in proc.stdout + proc.stderr  # the change is named even when allowed
    assert (tmp_path / "interrupted" / "run.json").exists()
