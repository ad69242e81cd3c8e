"""`lorakit train` on qwen3-tiny-random: outputs, resume after SIGKILL, data parallel and one-line errors
through the real CLI; batch/accumulation, packing, fused-forward, dtype and seed invariance through the
public API (`lorakit.train`, what the CLI calls) in this process, which saves each run the ~8 s of
importing torch, transformers and peft anew."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lorakit_cli import REPO, alpaca_file, cli_env, lorakit, write_config
from safetensors.torch import load_file


def tiny_config(tmp: Path, name: str, data: Path, **train) -> Path:
    t = {
        "output_dir": str(tmp / name),
        "max_steps": 6,
        "batch_size": 2,
        "grad_accum": 2,
        "logging_steps": 1,
        "save_steps": 3,
        "precision": "fp32",
        "threads": 1,
        **train,
    }
    return write_config(
        tmp / f"{name}.yaml",
        model={"name": "qwen3-tiny-random"},
        data={"path": str(data), "system": "现在你要扮演皇帝身边的女人--甄嬛", "eval_split": 4},
        lora={"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": "all-linear"},
        train=t,
    )


def adapter(run: Path, sub: str = "adapter") -> dict:
    return load_file(str(run / sub / "adapter_model.safetensors"))


def assert_same_adapter(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= atol, f"adapters differ by {worst}"


def losses(run: Path) -> list[float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def train(cfg: Path, *overrides: str) -> Path:
    """`lorakit train CFG OVERRIDES...` as `lorakit.train` in this process."""
    import lorakit
    from lorakit.config import parse_override

    threads = torch.get_num_threads()
    try:
        return lorakit.train(cfg, **dict(parse_override(o) for o in overrides)).path
    finally:  # the run sets train.threads for the process; the tests after it keep their own
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return alpaca_file(tmp_path_factory.mktemp("data") / "persona.json", n=40)


def test_train_writes_a_complete_run_directory(tmp_path, data):
    cfg = tiny_config(tmp_path, "run", data)
    lorakit("train", cfg)
    run = tmp_path / "run"
    for f in [
        "config.yaml",
        "run.json",
        "metrics.jsonl",
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
        "adapter/tokenizer_config.json",
        "plots/loss.png",
    ]:
        assert (run / f).exists(), f
    summary = json.loads((run / "run.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 6
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert any("eval_loss" in r for r in rows)
    assert (run / "checkpoints" / "checkpoint-3").is_dir()
    # a second run into the same folder is refused with one line, not a traceback
    again = lorakit("train", cfg, check=False)
    assert again.returncode == 2 and "already holds a finished run" in again.stderr
    assert "Traceback" not in again.stderr


def test_train_accounts_for_what_the_data_stage_dropped(tmp_path, capfd):
    """A reader counts the file's records: train says how many it read, dropped as exact duplicates and
    truncated (as `data prepare` does), and run.json keeps the counts. In this process, as `train` above."""
    records = json.loads(alpaca_file(tmp_path / "unique.json", n=10).read_text(encoding="utf-8"))
    long = {"instruction": "讲一个很长的故事。", "input": "", "output": "从前有一座山，山里有一座庙。" * 20}
    data = tmp_path / "with_duplicates.json"
    data.write_text(json.dumps(records + records[:3] + [long], ensure_ascii=False), encoding="utf-8")
    train(tiny_config(tmp_path, "run", data, max_steps=1), "data.max_length=96")
    out = capfd.readouterr().out
    assert (
        "data: 14 records read, 3 exact duplicates dropped, 1 truncated at data.max_length=96; 7 train / 4 eval samples"
    ) in out.splitlines(), out
    counts = json.loads((tmp_path / "run" / "run.json").read_text())["data"]
    assert (counts["records"], counts["duplicates_dropped"], counts["train_samples"], counts["eval_samples"]) == (
        14,
        3,
        7,
        4,
    )
    assert counts["train_truncated"] + counts["eval_truncated"] == 1


def test_kill_and_resume_matches_uninterrupted_run(tmp_path, data):
    steps = dict(max_steps=40, save_steps=4, batch_size=1, grad_accum=2)
    lorakit("train", tiny_config(tmp_path, "straight", data, **steps))
    cfg = tiny_config(tmp_path, "killed", data, **steps)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lorakit", "train", str(cfg)],
        env=cli_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt_root = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckpt_root.is_dir() and any(p.name.startswith("checkpoint-") for p in ckpt_root.iterdir()):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "run.json").exists()
    # without --resume the unfinished run is protected
    refused = lorakit("train", cfg, check=False)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    lorakit("train", cfg, "--resume")
    assert_same_adapter(adapter(tmp_path / "straight"), adapter(tmp_path / "killed"), atol=1e-6)
    assert losses(tmp_path / "straight") == pytest.approx(losses(tmp_path / "killed"), rel=1e-6)


def test_batch_times_accumulation_is_invariant(tmp_path, data):
    common = dict(max_steps=3, lr=1e-3, save_steps=100)
    train(tiny_config(tmp_path, "b1a8", data, batch_size=1, grad_accum=8, **common), "lora.dropout=0")
    train(tiny_config(tmp_path, "b8a1", data, batch_size=8, grad_accum=1, **common), "lora.dropout=0")
    assert losses(tmp_path / "b1a8") == pytest.approx(losses(tmp_path / "b8a1"), rel=1e-5)
    assert_same_adapter(adapter(tmp_path / "b1a8"), adapter(tmp_path / "b8a1"), atol=1e-5)


def test_token_budget_packing_is_invariant(tmp_path, data, capfd):
    """train.pack_tokens regroups a step's samples into fewer, larger forwards: same losses and adapter."""
    common = dict(max_steps=3, lr=1e-3, save_steps=100)
    train(tiny_config(tmp_path, "by4", data, batch_size=1, grad_accum=4, pack_tokens=None, **common), "lora.dropout=0")
    capfd.readouterr()
    train(
        tiny_config(tmp_path, "bytok", data, batch_size=1, grad_accum=4, pack_tokens=4096, **common), "lora.dropout=0"
    )
    out = capfd.readouterr()
    assert "packing up to 4,096 tokens per forward" in out.out + out.err
    assert losses(tmp_path / "by4") == pytest.approx(losses(tmp_path / "bytok"), rel=1e-5)
    assert_same_adapter(adapter(tmp_path / "by4"), adapter(tmp_path / "bytok"), atol=1e-5)


def test_fused_forwards_train_like_peft_s(tmp_path, data):
    """On CPU, LoRA projections, norms and MLPs run lorakit's fused forwards (lorakit/fused.py); peft's
    and transformers' own (train.fused=off) must give the same run."""
    common = dict(max_steps=3, lr=1e-3, save_steps=100)
    train(tiny_config(tmp_path, "fused", data, **common), "lora.dropout=0")
    train(tiny_config(tmp_path, "plain", data, **common), "lora.dropout=0", "train.fused=off")
    assert losses(tmp_path / "fused") == pytest.approx(losses(tmp_path / "plain"), rel=1e-5)
    assert_same_adapter(adapter(tmp_path / "fused"), adapter(tmp_path / "plain"), atol=1e-5)


def test_half_weights_train_on_any_cpu(tmp_path, data, capfd):
    """model.dtype=bfloat16, as the tutorial loads it: on a CPU without native bf16 the frozen projections
    stay bf16 and the matmuls run in fp32; either way the run trains like fp32 weights rounded to bf16."""
    from lorakit.models.precision import cpu_has_fast_bf16

    common = dict(max_steps=3, lr=1e-3, save_steps=100, precision="auto")
    capfd.readouterr()
    train(tiny_config(tmp_path, "bf16", data, **common), "lora.dropout=0", "model.dtype=bfloat16")
    out = capfd.readouterr()
    held = "the frozen projections are held in bfloat16 and every matmul runs in float32"
    assert (held in out.out + out.err) is not cpu_has_fast_bf16()
    train(tiny_config(tmp_path, "fp32", data, **common), "lora.dropout=0", "model.dtype=float32")
    assert losses(tmp_path / "bf16") == pytest.approx(losses(tmp_path / "fp32"), rel=2e-2)
    assert {v.dtype for v in adapter(tmp_path / "bf16").values()} == {torch.float32}


def test_same_seed_reproduces_and_other_seed_differs(tmp_path, data):
    for name, seed in [("s1", 1), ("s1b", 1), ("s2", 2)]:
        train(tiny_config(tmp_path, name, data, max_steps=2, seed=seed))
    assert_same_adapter(adapter(tmp_path / "s1"), adapter(tmp_path / "s1b"), atol=0)
    a, b = adapter(tmp_path / "s1"), adapter(tmp_path / "s2")
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_padding_path_matches_packing(tmp_path, data):
    common = dict(max_steps=2, save_steps=100)
    train(tiny_config(tmp_path, "packed", data, packing=True, **common), "lora.dropout=0")
    train(tiny_config(tmp_path, "padded", data, packing=False, **common), "lora.dropout=0")
    assert losses(tmp_path / "packed") == pytest.approx(losses(tmp_path / "padded"), rel=1e-4)


LAUNCHERS = {
    "torchrun": ["torchrun", "--standalone", "--nproc_per_node", "2"],
    # `accelerate launch --cpu` starts one process (it wants mpirun for several); `--multi_gpu` goes
    # through torchrun, which runs CPU processes on gloo just as well
    "accelerate": [
        "accelerate",
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "0",
    ],
}
DP_STEPS = dict(max_steps=2, save_steps=100, threads=1)


def launch(launcher: list[str], *args, tmp: Path) -> subprocess.CompletedProcess:
    """`LAUNCHER -m lorakit ARGS`; HF_HOME in tmp, so no user accelerate config is read."""
    return subprocess.run(
        [str(Path(sys.executable).with_name(launcher[0])), *launcher[1:], "-m", "lorakit", *map(str, args)],
        capture_output=True,
        text=True,
        env=cli_env(HF_HOME=str(tmp / "hf")),
        cwd=REPO,
        timeout=600,
    )


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory, data) -> Path:
    tmp = tmp_path_factory.mktemp("single")
    train(tiny_config(tmp, "single", data, batch_size=1, grad_accum=4, **DP_STEPS), "lora.dropout=0")
    return tmp / "single"


@pytest.mark.parametrize(
    "launcher, overrides",
    [
        ("torchrun", []),
        ("accelerate", []),
        # a checkpoint at step 1 (gathered from the shards), then resumed from it below
        ("torchrun", ["train.fsdp=true", "train.save_steps=1"]),
    ],
    ids=["torchrun", "accelerate", "torchrun-fsdp"],
)
def test_data_parallel_on_two_cpu_processes_matches_one(tmp_path, data, single_process_run, launcher, overrides):
    cfg = tiny_config(tmp_path, "ddp", data, batch_size=1, grad_accum=2, **DP_STEPS)
    proc = launch(LAUNCHERS[launcher], "train", cfg, "lora.dropout=0", *overrides, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert losses(single_process_run) == pytest.approx(losses(tmp_path / "ddp"), rel=1e-5)
    assert_same_adapter(adapter(single_process_run), adapter(tmp_path / "ddp"), atol=1e-5)
    if overrides:
        assert "FSDP: 2 decoder layers and the root sharded across 2 processes" in proc.stdout
        ckpt = tmp_path / "ddp" / "checkpoints" / "checkpoint-1"
        proc = launch(LAUNCHERS[launcher], "train", cfg, "lora.dropout=0", *overrides, "--resume", ckpt, tmp=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "resuming from" in proc.stdout
        assert_same_adapter(adapter(single_process_run), adapter(tmp_path / "ddp"), atol=1e-5)


def test_accelerate_sharding_configs_are_refused(tmp_path, data):
    cfg = tiny_config(tmp_path, "acc", data)
    # FSDP through the real launcher (it starts torchrun, which adds its own report of the failed ranks)
    fsdp = ["--use_fsdp" if a == "--multi_gpu" else a for a in LAUNCHERS["accelerate"]]
    proc = launch(fsdp, "train", cfg, tmp=tmp_path)
    assert proc.returncode != 0
    assert "error: accelerate launch with an FSDP config" in proc.stderr and "train.fsdp=true" in proc.stderr
    assert "lorakit/" not in proc.stderr, "a traceback from lorakit"
    assert "failed (exitcode: 2)" in proc.stderr  # torchrun's report of lorakit's exit code
    # DeepSpeed: accelerate's launcher needs the deepspeed package, not installed here, so set what it sets
    proc = subprocess.run(
        [sys.executable, "-m", "lorakit", "train", str(cfg)],
        capture_output=True,
        text=True,
        env=cli_env(ACCELERATE_USE_DEEPSPEED="true"),
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: accelerate launch with a DeepSpeed config")
    assert not (tmp_path / "acc").exists()


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, data):
    out = lorakit("train", tiny_config(tmp_path, "dry", data), "--dry-run")
    assert "optimizer steps" in out.stdout and "memory estimate" in out.stdout and "trainable" not in out.stderr
    assert not (tmp_path / "dry").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=1", "unknown key 'train.lrr'; did you mean train.lr?"),
        ("train.lr=fast", "train.lr"),
        ("lora.target_modules=[nope_proj]", "nope_proj"),
        ("data.path=/does/not/exist.json", "/does/not/exist.json"),
        ("model.name=/no/such/model", "/no/such/model"),
        ("model.quantize=4bit", "needs a CUDA GPU"),
        ("--preset=low-memory", "needs a CUDA GPU"),  # its 4-bit base is QLoRA's, on CUDA only
        ("--preset=tiny", "--preset tiny: unknown preset; choose from low-memory"),
        ("train.pack_tokens=0", "train.pack_tokens: must be a positive token count"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(tmp_path, data, override, message):
    proc = lorakit("train", tiny_config(tmp_path, "bad", data), override, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith(("Loading", "Warning"))]
    assert lines[-1].startswith("error:") and message in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "bad" / "adapter").exists()


def test_yaml_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: qwen3-tiny-random\ntrain:\n  epochs: [1\n")
    proc = lorakit("train", bad, check=False)
    assert proc.returncode == 2 and f"{bad}:" in proc.stderr and "invalid YAML" in proc.stderr


def test_early_stopping_and_lora_variants(tmp_path, data):
    # lr 0: eval loss never improves, so patience 1 stops after the second evaluation
    cfg = tiny_config(
        tmp_path, "early", data, max_steps=10, lr=1e-12, eval_steps=1, early_stopping_patience=1, save_steps=100
    )
    out = lorakit("train", cfg, "lora.use_dora=true", "lora.use_rslora=true", "lora.target_modules=[q_proj,v_proj]")
    assert "early stopping at step 2" in out.stdout
    summary = json.loads((tmp_path / "early" / "run.json").read_text())
    assert summary["steps"] == 2 and summary["best_step"] == 1
    cfg_saved = (tmp_path / "early" / "adapter" / "adapter_config.json").read_text()
    assert '"use_dora": true' in cfg_saved and '"use_rslora": true' in cfg_saved
