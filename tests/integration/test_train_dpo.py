"""`train.method: dpo` end to end on qwen3-tiny-random: the run folder with DPO's metrics and held-out
preference figures, the plan, kill and resume (bit-equal adapter, precomputed reference reused), and bad
or mismatched data refused in one line with nothing written."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lorakit_cli import REPO, cli_env, lorakit, write_config
from safetensors.torch import load_file

METRICS = ["rewards/chosen", "rewards/rejected", "accuracy", "margin", "logps/chosen", "logps/rejected"]


def pairs_file(path: Path, n: int = 14) -> Path:
    forms = []
    for i in range(n):
        if i % 3 == 0:  # TRL's string form
            forms.append(
                {
                    "prompt": f"Who are you, question {i}?",
                    "chosen": f"I am Zhen Huan, answer {i}.",
                    "rejected": f"As an AI assistant, I cannot say ({i}).",
                }
            )
        elif i % 3 == 1:  # UltraFeedback: whole conversations sharing the prompt
            user = {"role": "user", "content": f"问题{i}：你是谁？"}
            forms.append(
                {
                    "chosen": [user, {"role": "assistant", "content": f"臣妾甄嬛，第{i}次回答。"}],
                    "rejected": [user, {"role": "assistant", "content": f"我是一个AI助手（{i}）。"}],
                }
            )
        else:  # LLaMA-Factory's ShareGPT pairs
            forms.append(
                {
                    "conversations": [{"from": "human", "value": f"Tell me about the palace, {i}."}],
                    "chosen": {"from": "gpt", "value": f"The palace is quiet tonight, {i}."},
                    "rejected": {"from": "gpt", "value": f"I am a language model {i}."},
                }
            )
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in forms), encoding="utf-8")
    return path


def dpo_config(tmp: Path, name: str, data: Path, **train) -> Path:
    t = {
        "output_dir": str(tmp / name),
        "method": "dpo",
        "max_steps": 4,
        "batch_size": 2,
        "grad_accum": 2,
        "logging_steps": 1,
        "save_steps": 2,
        "precision": "fp32",
        "threads": 1,
        "lr": 1e-3,
        **train,
    }
    return write_config(
        tmp / f"{name}.yaml",
        model={"name": "qwen3-tiny-random"},
        data={"path": str(data), "eval_split": 3},
        lora={"r": 4, "alpha": 8, "target_modules": "all-linear"},
        train=t,
    )


def train(cfg: Path, *overrides: str):
    import lorakit
    from lorakit.config import parse_override

    threads = torch.get_num_threads()
    try:
        return lorakit.train(cfg, **dict(parse_override(o) for o in overrides))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return pairs_file(tmp_path_factory.mktemp("pairs") / "pairs.jsonl")


def test_dpo_run_logs_preference_metrics_and_held_out_figures(tmp_path, data, capfd):
    run = train(dpo_config(tmp_path, "run", data))
    out = capfd.readouterr().out
    assert "11 train / 3 eval samples" in out or "11 train / 3 eval" in out, out
    assert "11 pairs, 4 steps" in out, out
    folder = tmp_path / "run"
    assert run.path == folder and (folder / "adapter" / "adapter_model.safetensors").is_file()
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert steps[0]["loss"] == pytest.approx(0.6931471805599453, abs=1e-6)  # LoRA B = 0: ln 2
    assert all(k in r for r in steps for k in METRICS)
    assert steps[-1]["margin"] > 0 and steps[-1]["loss"] < steps[0]["loss"]
    evals = [r for r in rows if "eval_loss" in r]
    assert evals and all(f"eval_{k}" in evals[-1] for k in METRICS)
    assert json.loads((folder / "run.json").read_text())["status"] == "completed"


def test_dpo_plan_counts_pairs_and_both_rows(tmp_path, data):
    from lorakit.config import load_config
    from lorakit.training.plan import plan_run

    plan = plan_run(load_config(dpo_config(tmp_path, "plan", data)))
    assert plan.unit == "pairs" and plan.train_samples == 11 and plan.samples_per_step == 4
    assert "11 train / 3 eval pairs" in "\n".join(plan.lines())
    assert plan.train_tokens > 2 * plan.supervised_tokens // 2 and not (tmp_path / "plan").exists()


@pytest.mark.parametrize("method", ["dpo", "orpo", "simpo", "kto"])
def test_kill_and_resume_gives_the_uninterrupted_adapter(tmp_path, data, method):
    """SIGKILL after the first checkpoint, then --resume: bit-equal to the run never killed. DPO with its
    precomputed reference (written once, reused); KTO with two answers per micro-batch, so its KL estimate
    (mismatched prompt/answer pairs within a micro-batch) is replayed too."""
    steps = dict(max_steps=12, save_steps=3, batch_size=1, grad_accum=2, method=method)
    if method == "dpo":
        steps["precompute_ref_logps"] = True
    if method == "kto":
        steps["batch_size"] = 2
    train(dpo_config(tmp_path, "straight", data, **steps))  # in this process: one interpreter start less
    cfg = dpo_config(tmp_path, "killed", data, **steps)
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
    ref = tmp_path / "killed" / "ref_logps.json"
    assert ref.is_file() == (method == "dpo")  # computed once, before the first step
    stamp = ref.stat().st_mtime_ns if method == "dpo" else None
    lorakit("train", cfg, "--resume")
    if method == "dpo":
        assert ref.stat().st_mtime_ns == stamp  # reused, not recomputed
    a = load_file(str(tmp_path / "straight" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_pairs_and_mismatched_methods_are_refused_in_one_line(tmp_path, data):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"prompt": "Hi", "chosen": "Same.", "rejected": "Same."})
        + "\n"
        + json.dumps({"prompt": "Hi", "chosen": "", "rejected": "No."})
        + "\n",
        encoding="utf-8",
    )
    differ = tmp_path / "differ.jsonl"
    differ.write_text(
        json.dumps(
            {
                "chosen": [{"role": "user", "content": "A?"}, {"role": "assistant", "content": "x"}],
                "rejected": [{"role": "user", "content": "B?"}, {"role": "assistant", "content": "y"}],
            }
        )
        + "\n",
        encoding="utf-8",
    )
    sft = tmp_path / "sft.jsonl"
    sft.write_text(json.dumps({"instruction": "Hi", "output": "Hello."}) + "\n", encoding="utf-8")
    cases = [
        (bad, "dpo", f"{bad}:1: chosen: equal to rejected"),
        (differ, "dpo", f"{differ}:1: chosen/rejected: the prompt differs between chosen and rejected"),
        (sft, "dpo", f"{sft}:1: not a preference record"),
        (data, "sft", f"{data}:1: a preference pair (keys: chosen, prompt, rejected); train.method sft"),
    ]
    from lorakit.errors import LorakitError

    for i, (path, method, needle) in enumerate(cases):  # through the API, in this process
        with pytest.raises(LorakitError) as err:
            train(dpo_config(tmp_path, f"r{i}", path), f"train.method={method}")
        assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)
        assert not (tmp_path / f"r{i}").exists()
    second = tmp_path / "second.jsonl"
    second.write_text(json.dumps({"prompt": "Hi", "chosen": "", "rejected": "No."}) + "\n", encoding="utf-8")
    proc = lorakit("train", dpo_config(tmp_path, "r9", second), check=False)  # and through the CLI: one line
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert f"{second}:1: chosen: empty" in proc.stderr and not (tmp_path / "r9").exists()


@pytest.mark.parametrize(
    "overrides",
    [pytest.param([], id="data-parallel"), pytest.param(["train.fsdp=true"], id="fsdp", marks=pytest.mark.slow)],
)
def test_two_processes_match_one(tmp_path, data, overrides):
    """The reference pass (adapter off) and the pair-mean loss under torchrun: data parallel and FSDP."""
    steps = dict(max_steps=2, save_steps=100, batch_size=1)
    train(dpo_config(tmp_path, "single", data, grad_accum=4, **steps))
    cfg = dpo_config(tmp_path, "ddp", data, grad_accum=2, **steps)
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "lorakit", "train", str(cfg), *overrides],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = load_file(str(tmp_path / "single" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5
