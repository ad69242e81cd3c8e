"""Atomic outputs never leave half-written folders; plots and metrics files come from one source."""

import json
import os
import stat

import pytest

from lorakit.atomic import atomic_dir, write_bytes, write_json, write_text
from lorakit.config import TrackingConfig
from lorakit.errors import LorakitError
from lorakit.training.tracking import Tracker, check_backends, read_metrics, write_plots


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("killed")
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_only_when_allowed(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old").write_text("old")
    with pytest.raises(FileExistsError):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "new").write_text("new")
    assert (tmp_path / "out" / "old").exists()
    with atomic_dir(tmp_path / "out", overwrite=True) as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["new"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_outputs_get_the_permissions_of_a_plain_write(tmp_path, umask):
    # temp files are 0600 and temp folders 0700; an output renamed from them must not stay so, or Ollama's
    # own user cannot read an exported GGUF (the umask decides, as for open() and mkdir())
    old = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "x")
        write_bytes(tmp_path / "b.bin", b"x")
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "inside").write_text("x")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "a.txt") == mode(tmp_path / "b.bin") == 0o666 & ~umask
    assert mode(tmp_path / "out") == 0o777 & ~umask


def test_tracker_truncates_metrics_on_resume_and_plots(tmp_path):
    t = Tracker(TrackingConfig(), tmp_path, {})
    for step in range(1, 6):
        t.log(step, {"loss": 1.0 / step, "lr": 0.1, "grad_norm": 1.0, "tokens_per_s": 100.0})
    t.log(5, {"eval_loss": 0.5})
    t.close()
    resumed = Tracker(TrackingConfig(), tmp_path, {}, resume_step=3)
    resumed.close()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    written = write_plots(tmp_path)
    assert {p.name for p in written} == {"loss.png", "learning_rate.png", "grad_norm.png", "throughput.png"}
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)


def test_missing_tracker_is_a_one_line_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(LorakitError, match="wandb is not installed"):
        check_backends(TrackingConfig(backends=["wandb"]))


def test_write_json_roundtrip(tmp_path):
    write_json(tmp_path / "a" / "x.json", {"名": 1})
    assert json.loads((tmp_path / "a" / "x.json").read_text()) == {"名": 1}
