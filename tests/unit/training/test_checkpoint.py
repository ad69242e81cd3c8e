"""Checkpoint rotation and the resume-point search, on checkpoint folders written by hand (no model)."""

import json
from pathlib import Path

import pytest

from lorakit.errors import LorakitError
from lorakit.training import checkpoint


def _ckpt(run: Path, step: int, complete: bool = True) -> Path:
    p = run / "checkpoints" / f"checkpoint-{step}"
    p.mkdir(parents=True)
    if complete:  # as save_checkpoint leaves it: state.json, then the checksum manifest of the folder
        (p / "state.json").write_text(json.dumps({"step": step}))
        for name in (checkpoint.STATE, "adapter_model.safetensors"):  # contents never read by these tests
            (p / name).write_bytes(b"x")
        (p / checkpoint.MANIFEST).write_text(json.dumps({"files": checkpoint._digests(p)}))
    return p


def _steps(run: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in checkpoint.checkpoint_dirs(run)]


def test_checkpoints_sort_by_step_not_name_and_skip_incomplete(tmp_path):
    for step in (2, 10, 1):
        _ckpt(tmp_path, step)
    _ckpt(tmp_path, 20, complete=False)  # a save killed before state.json: never a resume point
    (tmp_path / "checkpoints" / "notes").mkdir()
    assert _steps(tmp_path) == [1, 2, 10]


def test_rotate_keeps_the_newest_and_the_best(tmp_path):
    for step in (1, 2, 3, 4, 5):
        _ckpt(tmp_path, step)
    stale = tmp_path / "checkpoints" / ".checkpoint-6.tmp"
    stale.mkdir()
    checkpoint.rotate(tmp_path, keep=2, protect=tmp_path / "checkpoints" / "checkpoint-2")
    assert _steps(tmp_path) == [2, 4, 5]
    assert not stale.exists()  # a killed save's temp folder goes too


def test_rotate_keep_zero_removes_all_but_the_best(tmp_path):
    for step in (1, 2):
        _ckpt(tmp_path, step)
    checkpoint.rotate(tmp_path, keep=0, protect=None)
    assert _steps(tmp_path) == []


def test_resume_latest_is_the_newest_complete_checkpoint(tmp_path):
    _ckpt(tmp_path, 3)
    _ckpt(tmp_path, 12)
    _ckpt(tmp_path, 15, complete=False)
    assert checkpoint.find_resume_point(tmp_path, "latest").name == "checkpoint-12"


def test_resume_from_a_named_folder_and_the_errors(tmp_path):
    p = _ckpt(tmp_path, 3)
    assert checkpoint.find_resume_point(tmp_path, str(p)) == p
    with pytest.raises(LorakitError, match="no such checkpoint folder"):
        checkpoint.find_resume_point(tmp_path, str(tmp_path / "missing"))
    with pytest.raises(LorakitError, match="no checkpoint to resume from"):
        checkpoint.find_resume_point(tmp_path / "empty-run", "latest")
