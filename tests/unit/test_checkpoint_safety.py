"""Checkpoints: checksummed at save, verified at resume with a fallback, loaded without unpickling code;
resume rules; divergence and signal guards."""

import errno
import json
import os
import pickle
import shutil
import signal

import pytest
import torch
from tiny_models import tiny_qwen3

from lorakit.config import LoraConfig, RunConfig
from lorakit.errors import LorakitError
from lorakit.models.lora import attach_lora
from lorakit.training import checkpoint, guards, resume


def tiny_lora(r: int = 2):
    model = attach_lora(tiny_qwen3(), LoraConfig(r=r, alpha=4))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    opt.step()
    return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)


@pytest.fixture(scope="module")
def saved_once(tmp_path_factory):
    model, opt, sched = tiny_lora()
    run = tmp_path_factory.mktemp("saved")
    for step in (2, 4):
        checkpoint.save_checkpoint(run, step, model, opt, sched, {"best_checkpoint": None})
    return run, (model, opt, sched)


@pytest.fixture()
def saved(saved_once, tmp_path):
    """A run folder with checkpoint-2 and checkpoint-4 of a real (tiny) PEFT model, this test's own copy."""
    shutil.copytree(saved_once[0], tmp_path / "run")
    return tmp_path / "run", saved_once[1]


def test_save_writes_a_manifest_that_verifies(saved):
    run, (model, opt, sched) = saved
    ckpt = run / "checkpoints" / "checkpoint-4"
    manifest = json.loads((ckpt / "manifest.json").read_text())["files"]
    assert {"adapter_model.safetensors", "training_state.pt", "state.json"} <= set(manifest)
    assert checkpoint.verify(ckpt) is None
    assert checkpoint.load_checkpoint(ckpt, model, opt, sched)["step"] == 4


def test_a_checkpoint_of_another_rank_is_one_line(saved):
    run, _ = saved
    model, opt, sched = tiny_lora(r=4)
    with pytest.raises(LorakitError, match="does not fit this model") as e:
        checkpoint.load_checkpoint(run / "checkpoints" / "checkpoint-4", model, opt, sched)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("damage", ["truncate", "zero", "garbage", "delete"])
def test_resume_falls_back_past_a_damaged_newest_checkpoint(saved, damage):
    run, _ = saved
    target = run / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors"
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "zero":  # same size, tensor bytes zeroed: only a checksum can tell
        target.write_bytes(data[:-64] + bytes(64))
    elif damage == "garbage":
        target.write_bytes(os.urandom(len(data)))
    else:
        target.unlink()
    said = []
    assert checkpoint.find_resume_point(run, "latest", said.append).name == "checkpoint-2"
    assert len(said) == 1 and "skipping" in said[0] and "checkpoint-4" in said[0] and "adapter_model" in said[0]
    with pytest.raises(LorakitError, match="checkpoint-4.*adapter_model"):
        checkpoint.find_resume_point(run, str(run / "checkpoints" / "checkpoint-4"))


def test_no_intact_checkpoint_is_one_line(saved):
    run, _ = saved
    for c in checkpoint.checkpoint_dirs(run):
        (c / "state.json").write_text("{}")
    with pytest.raises(LorakitError, match="no intact checkpoint"):
        checkpoint.find_resume_point(run, "latest", lambda m: None)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_crafted_training_state_never_runs_code(saved, monkeypatch, tmp_path):
    run, (model, opt, sched) = saved
    monkeypatch.chdir(tmp_path)
    ckpt = run / "checkpoints" / "checkpoint-4"
    (ckpt / "training_state.pt").write_bytes(pickle.dumps({"optimizer": _RunsCode()}))
    (ckpt / "manifest.json").write_text(json.dumps({"files": checkpoint._digests(ckpt)}))  # checksums match
    with pytest.raises(LorakitError, match="not a plain tensor file"):
        checkpoint.load_checkpoint(ckpt, model, opt, sched)
    assert not (tmp_path / "PWNED").exists()


def test_disk_full_is_recognised():
    assert checkpoint.disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert checkpoint.disk_full(OSError(errno.EFBIG, "File too large"))
    assert checkpoint.disk_full(RuntimeError("[enforce fail at inline_container.cc:672] . file write failed"))
    assert checkpoint.disk_full(Exception("Error while serializing: I/O error: No space left on device (os error 28)"))
    assert not checkpoint.disk_full(OSError(errno.EACCES, "Permission denied"))


def test_stale_temp_folders_are_removed(tmp_path):
    (tmp_path / "checkpoints" / ".checkpoint-6.abc.tmp").mkdir(parents=True)
    (tmp_path / ".adapter.xyz.tmp").mkdir()
    (tmp_path / "checkpoints" / "checkpoint-4").mkdir()
    gone = checkpoint.remove_stale(tmp_path)
    assert len(gone) == 2 and (tmp_path / "checkpoints" / "checkpoint-4").is_dir()


def test_best_checkpoint_never_names_a_missing_folder(tmp_path):
    kept = tmp_path / "checkpoints" / "checkpoint-4"
    kept.mkdir(parents=True)
    assert checkpoint.existing_best({"best_checkpoint": str(kept), "best_step": 4}, 10, tmp_path) == str(kept)
    gone = str(tmp_path / "checkpoints" / "checkpoint-2")
    assert checkpoint.existing_best({"best_checkpoint": gone, "best_step": 2}, 10, tmp_path) is None
    assert checkpoint.existing_best({"best_checkpoint": gone, "best_step": 10}, 10, tmp_path) == str(
        tmp_path / "adapter"
    )


def _with(cfg: RunConfig, **changes) -> dict:
    d = cfg.model_dump(mode="json")
    for key, value in changes.items():
        section, leaf = key.split("__")
        d[section][leaf] = value
    return {"config": d, "data": "abc", "base_model": {"weights_fingerprint": "f1"}}


def test_resume_rules_name_every_changed_key():
    cfg = RunConfig()
    before = _with(cfg)
    assert (
        resume.changes(
            before,
            _with(
                cfg,
                train__logging_steps=1,
                train__save_steps=7,
                tracking__project="x",
                data__path="moved.json",
                train__output_dir="elsewhere",
            ),
        )
        == []
    )
    diff = resume.changes(before, _with(cfg, lora__alpha=32, train__batch_size=1, train__seed=3))
    assert [d.split(":")[0] for d in diff] == ["lora.alpha", "train.batch_size", "train.seed"]
    now = {**before, "data": "def", "base_model": {"weights_fingerprint": "f2"}}
    assert [d.split(":")[0] for d in resume.changes(before, now)] == ["data content", "base model"]
    state = {"trained_with": before, "step": 4}
    with pytest.raises(LorakitError, match="lora.alpha: 16.0 -> 32.*--resume-anyway") as e:
        resume.check_resume(checkpoint.Path("c/checkpoint-4"), state, _with(cfg, lora__alpha=32), False, print)
    assert "\n" not in str(e.value)
    record = resume.check_resume(
        checkpoint.Path("c/checkpoint-4"), state, _with(cfg, lora__alpha=32), True, lambda m: None
    )
    assert record["resume_anyway"] and record["changed"] == ["lora.alpha: 16.0 -> 32"]


def test_a_non_finite_step_stops_with_the_last_good_checkpoint():
    guards.check_finite(3, 1.5, 0.2, None)
    for loss, norm in ((float("nan"), 1.0), (1.0, float("inf"))):
        with pytest.raises(guards.Diverged, match="step 7.*last good checkpoint: run/checkpoints/checkpoint-6"):
            guards.check_finite(7, loss, norm, "run/checkpoints/checkpoint-6")


def test_sigterm_asks_for_a_checkpoint_like_ctrl_c():
    flag = guards.StopFlag()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.requested and flag.exit_code == 143
    finally:
        flag.restore()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
