"""Run directories: only folders lorakit wrote are ever replaced, one writer at a time, and adapters that a
later stage loads are complete and finite."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lorakit.errors import LorakitError
from lorakit.rundir import (
    LOCK,
    MARKER,
    RunLock,
    check_adapter,
    check_output_dir,
    claim_run_dir,
    mark_output,
    open_run,
    overlapping,
)


def test_foreign_folders_are_never_replaced(tmp_path):
    thesis = tmp_path / "mine"
    thesis.mkdir()
    (thesis / "thesis.txt").write_text("years of work")
    for overwrite in (False, True):
        with pytest.raises(LorakitError, match="not written by lorakit"):
            claim_run_dir(thesis, None, overwrite)
    (thesis / "config.yaml").write_text("train: {}\n")  # a config of its own does not make it a run
    with pytest.raises(LorakitError, match="not written by lorakit"):
        claim_run_dir(thesis, None, True)
    assert sorted(p.name for p in thesis.iterdir()) == ["config.yaml", "thesis.txt"]


@pytest.mark.parametrize("where", ["", ".", "..", "/", "~", "repo"])
def test_dangerous_places_are_refused(tmp_path, monkeypatch, where):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    work = repo / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    target = str(repo) if where == "repo" else where
    with pytest.raises(LorakitError, match="empty|refusing|repository root"):
        check_output_dir(target, "train.output_dir", True)


def test_overwrite_empties_only_a_marked_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    mark_output(run, "run")
    (run / "run.json").write_text('{"status": "completed"}')
    (run / "checkpoints").mkdir()
    with pytest.raises(LorakitError, match="already holds a finished run"):
        claim_run_dir(run, None, False)
    lock = claim_run_dir(run, None, True)
    try:
        assert sorted(p.name for p in run.iterdir()) == sorted([LOCK, MARKER])
    finally:
        lock.release()


def test_a_refused_claim_leaves_no_folder_behind(tmp_path):
    holder = RunLock(tmp_path / "run").acquire()
    try:
        with pytest.raises(LorakitError, match="in use by another lorakit run"):
            claim_run_dir(tmp_path / "run", None, False)
    finally:
        holder.release()


def test_lock_is_exclusive_and_dies_with_its_process(tmp_path):
    run = tmp_path / "run"
    first = RunLock(run).acquire()
    with pytest.raises(LorakitError, match=f"in use by another lorakit run \\(pid {os.getpid()}\\)"):
        RunLock(run).acquire()
    first.release()
    # a holder killed with SIGKILL releases it: the kernel drops flocks of dead processes
    code = (
        f"import os, signal; from lorakit.rundir import RunLock; RunLock({str(run)!r}).acquire(); "
        f"os.kill(os.getpid(), signal.SIGKILL)"
    )
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == -9
    RunLock(run).acquire().release()


def test_overlapping_folders():
    assert overlapping(Path("/a/b"), Path("/a/b"))
    assert overlapping(Path("/a"), Path("/a/b"))
    assert overlapping(Path("/a/b/c"), Path("/a/b"))
    assert not overlapping(Path("/a/bc"), Path("/a/b"))


def _adapter(folder: Path, value: float | None = 0.5) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text('{"base_model_name_or_path": "qwen3-tiny-random"}')
    if value is not None:
        save_file({"a.lora_A.weight": torch.full((2, 2), value)}, str(folder / "adapter_model.safetensors"))
    return folder


def test_adapter_checks(tmp_path):
    assert check_adapter(_adapter(tmp_path / "ok")).name == "adapter_model.safetensors"
    with pytest.raises(LorakitError, match="weights file missing.*never looked up on the hub"):
        check_adapter(_adapter(tmp_path / "missing", None))
    with pytest.raises(LorakitError, match="a.lora_A.weight holds NaN or infinite"):
        check_adapter(_adapter(tmp_path / "nan", float("nan")))
    (tmp_path / "ok" / "adapter_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(LorakitError, match="unreadable adapter weights"):
        check_adapter(tmp_path / "ok")


def test_a_diverged_run_is_never_opened_as_finished(tmp_path):
    run = tmp_path / "run"
    _adapter(run / "adapter")
    (run / "config.yaml").write_text("model: {name: qwen3-tiny-random}\n")
    (run / "run.json").write_text('{"status": "diverged", "step": 3, "last_good_checkpoint": null}')
    with pytest.raises(LorakitError, match="did not complete \\(diverged at step 3"):
        open_run(run)


def test_a_run_that_wrote_nothing_leaves_no_folder(tmp_path):
    claim_run_dir(tmp_path / "new", None, False).release()  # e.g. a bad data.path found after the claim
    assert not (tmp_path / "new").exists()
    lock = claim_run_dir(tmp_path / "new", None, False)
    (tmp_path / "new" / "config.yaml").write_text("x")
    lock.release()
    assert (tmp_path / "new" / "config.yaml").exists()
