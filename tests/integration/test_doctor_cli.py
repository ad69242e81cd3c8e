"""`lorakit doctor` through the real CLI: the report on this CPU, the same estimate as `train --dry-run`,
and a run planned for a faked 24 GiB GPU."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from lorakit_cli import REPO, lorakit, write_config

GIB = 2**30


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("doctor")
    return write_config(
        tmp / "tiny.yaml",
        model={"name": "qwen3-tiny-random", "dtype": "bfloat16"},
        data={"path": str(REPO / "tests/fixtures/data/huanhuan.json"), "system": "你是甄嬛"},
        train={"output_dir": str(tmp / "run"), "max_steps": 2},
    )


def test_doctor_without_a_config_reports_the_machine():
    out = lorakit("doctor").stdout
    assert out.splitlines()[0].startswith(f"torch {torch.__version__} (")
    assert "CPU: " in out and "avx512_bf16" in out and "amx_bf16" in out
    for engine in ("bitsandbytes: ", "vllm: ", "llama.cpp: "):
        assert engine in out
    assert "memory estimate" not in out


def test_doctor_gives_the_dry_run_estimate_and_what_would_fit(tiny_cfg):
    dry = lorakit("train", tiny_cfg, "--dry-run").stdout
    planned_gb = float(re.search(r"memory estimate: ~([\d.]+) GB", dry).group(1))
    out = lorakit("doctor", tiny_cfg).stdout
    here = re.search(r"memory estimate: ~([\d.]+) GiB peak on the CPU \(([\d.]+) GiB RAM available\): fits", out)
    assert here, out
    assert abs(float(here.group(1)) - planned_gb * 1e9 / GIB) < 0.06  # the same plan, in GiB (both rounded)
    assert "with train.gradient_checkpointing=true: ~" in out and "with --preset low-memory" not in out  # CUDA only
    card = lorakit("doctor", tiny_cfg, "--gpu-memory", "24").stdout
    assert "trains on a 24 GiB GPU (23.5 GiB free after the CUDA context)" in card
    assert re.search(r"memory estimate: ~[\d.]+ GiB peak on a 24 GiB GPU .*: fits, [\d.]+ GiB to spare", card)
    assert "with --preset low-memory: ~" in card
    bad = lorakit("doctor", tiny_cfg, "train.lr=fast", check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1


def test_doctor_on_a_faked_gpu_plans_for_its_free_memory(tiny_cfg, monkeypatch, capsys):
    """In-process, with torch.cuda answering as a 24 GiB RTX 4090 with 20 GiB free would."""
    from types import SimpleNamespace

    from lorakit.cli.main import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda i: SimpleNamespace(name="NVIDIA GeForce RTX 4090", major=8, minor=9)
    )
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i=0: (20 * GIB, 24 * GIB))
    with pytest.raises(SystemExit) as done:
        main(["doctor", str(tiny_cfg)])
    out = capsys.readouterr().out
    assert done.value.code == 0, out
    assert "GPU 0: NVIDIA GeForce RTX 4090, 24.0 GiB (20.0 free), compute 8.9, bf16 yes" in out
    assert "trains on GPU 0 (NVIDIA GeForce RTX 4090, 20.0 GiB free)" in out
    assert re.search(r"memory estimate: ~[\d.]+ GiB peak on GPU 0 .*: fits", out)


def test_doctor_answers_before_the_download(tmp_path, monkeypatch, capsys):
    """The issue's case: `lorakit doctor configs/qwen3-4b-huanhuan.yaml` before `lorakit download` (in
    this process, as above). The estimate from the Qwen3-4B shapes lorakit knows is the one for a folder
    of the same shapes (the benchmark's way: qwen3-4b-random's config.json and the Qwen3 tokenizer)."""
    import huggingface_hub.constants

    from lorakit import doctor
    from lorakit.cli.main import main
    from lorakit.config import load_config
    from lorakit.models import cache_root
    from lorakit.models.builtin import qwen3_config, qwen3_tokenizer_dir

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # not this machine's
    data = f"data.path={REPO / 'tests/fixtures/data/huanhuan.json'}"
    with pytest.raises(SystemExit) as done:
        main(["doctor", str(REPO / "configs/qwen3-4b-huanhuan.yaml"), data, "--gpu-memory", "24"])
    out = capsys.readouterr().out
    assert done.value.code == 0, out
    assert (
        "model shapes: Qwen/Qwen3-4B is not downloaded; estimated from the Qwen3-4B shapes lorakit knows, "
        "tokens counted with the Qwen3 tokenizer"
    ) in out.splitlines()
    folder = tmp_path / "qwen3-4b-shape"
    qwen3_config("qwen3-4b-random").save_pretrained(str(folder))
    for f in qwen3_tokenizer_dir(cache_root()).iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    cfg = load_config(REPO / "configs/qwen3-4b-huanhuan.yaml", [data, f"model.name={folder}"])
    target = doctor.pick_target(cfg, None, gpu_memory_gib=24)
    planned = doctor.Estimate("as configured", [], doctor.Planner()(cfg, target))
    expected = doctor.fit_lines([planned], target, bitsandbytes=True)[0]
    assert expected.startswith("memory estimate: ~") and expected in out.splitlines(), out
