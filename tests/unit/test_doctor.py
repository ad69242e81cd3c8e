"""lorakit doctor: the machine report on this CPU and on faked GPUs, the install hints, the Makefile's
choice of torch build, and the fit verdict."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lorakit import doctor, install
from lorakit.config import build_config

REPO = Path(__file__).resolve().parents[2]
GIB = 2**30


def fake_gpus(monkeypatch, *cards):
    """torch.cuda answering as if `cards` ((name, total GiB, free GiB, (major, minor)), ...) were present."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(cards))
    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda i: SimpleNamespace(name=cards[i][0], major=cards[i][3][0], minor=cards[i][3][1]),
    )
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i=0: (int(cards[i][2] * GIB), int(cards[i][1] * GIB)))


def test_cpu_flags_from_cpuinfo(tmp_path):
    amx = tmp_path / "cpuinfo"
    amx.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n\n"
        "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu\n"
    )
    model, flags = doctor.cpu_features(amx)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert flags == {"avx2": True, "avx512f": True, "avx512_bf16": True, "amx_bf16": True, "amx_tile": True}
    assert doctor.cpu_features(tmp_path / "missing") == ("unknown CPU", dict.fromkeys(doctor.CPU_FLAGS, False))
    # this machine: whatever it is, the report agrees with what precision.py decides from the same file
    from lorakit.models.precision import cpu_has_fast_bf16

    _, here = doctor.cpu_features()
    assert (here["avx512_bf16"] or here["amx_bf16"]) == cpu_has_fast_bf16()


def test_report_on_this_cpu():
    machine = doctor.inspect_machine()
    lines = "\n".join(machine.lines())
    assert f"torch {torch.__version__}" in lines
    if torch.version.cuda is None:
        assert "(CPU build)" in lines
    if not torch.cuda.is_available():
        assert machine.gpus == [] and "uses: the CPU" in lines
    assert machine.ram_available_bytes and machine.ram_available_bytes > 0
    assert set(machine.engines) == {"bitsandbytes", "vllm", "llama.cpp"}
    for name, version in machine.engines.items():  # each line says either the version or how to get it
        assert f"{name}: " in lines and (version or "not installed (") in lines


def test_fake_gpus_memory_and_bf16(monkeypatch):
    fake_gpus(monkeypatch, ("NVIDIA GeForce RTX 4090", 23.99, 23.4, (8, 9)), ("Tesla T4", 15.0, 14.5, (7, 5)))
    gpus = doctor.list_gpus()
    assert [(g.name, g.bf16) for g in gpus] == [("NVIDIA GeForce RTX 4090", True), ("Tesla T4", False)]
    assert gpus[0].total_bytes == int(23.99 * GIB) and gpus[0].free_bytes == int(23.4 * GIB)
    machine = doctor.Machine("2.13.0", "13.0", gpus, "x", {}, None, {})
    lines = machine.lines()
    assert lines[0] == "torch 2.13.0 (CUDA 13.0 build)"
    assert "GPU 0: NVIDIA GeForce RTX 4090, 24.0 GiB (23.4 free), compute 8.9, bf16 yes" in lines
    assert any(line.startswith("GPU 1: Tesla T4") and "bf16 no" in line for line in lines)
    assert "lorakit train (train.device auto) uses: GPU 0, NVIDIA GeForce RTX 4090" in lines


def test_cpu_wheel_on_a_machine_with_a_driver_says_how_to_fix(monkeypatch):
    monkeypatch.setattr(doctor, "_nvidia_driver_present", lambda: True)
    lines = doctor.Machine("2.13.0+cpu", None, [], "x", {}, None, {}).lines()
    assert any("make install TORCH=cuda" in line for line in lines)
    monkeypatch.setattr(doctor, "_nvidia_driver_present", lambda: False)
    assert not any("TORCH=cuda" in line for line in doctor.Machine("2.13.0+cpu", None, [], "x", {}, None, {}).lines())


def test_vllm_found_on_path(tmp_path, monkeypatch):
    exe = tmp_path / "vllm"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert install.vllm_executable() == str(exe)
    assert doctor.engines()["vllm"] is not None


def test_install_hints_name_a_command_that_works_in_the_checkout(monkeypatch):
    assert install.checkout_root() == REPO  # the tests run from a checkout's src/
    monkeypatch.chdir(REPO)
    assert install.install_command("bitsandbytes", "install-gpu") == "make install-gpu"
    assert install.install_command("wandb").endswith("-m pip install -c requirements/constraints.txt wandb")
    monkeypatch.chdir("/")
    assert install.install_command("modelscope", "install") == f"make -C {REPO} install"
    monkeypatch.setattr(install, "checkout_root", lambda: None)  # lorakit installed from PyPI
    assert install.install_command("bitsandbytes", "install-gpu") == "pip install bitsandbytes"


def test_modelscope_is_a_pinned_dependency():
    import modelscope  # noqa: F401  (installed by make install, not an optional extra)

    pins = (REPO / "requirements" / "constraints.txt").read_text()
    assert "\nmodelscope==" in pins and '"modelscope>=' in (REPO / "pyproject.toml").read_text()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("driver", [False, True])
def test_make_install_picks_the_torch_build(tmp_path, driver):
    """`make -n` prints what install would run; a fake nvidia-smi on PATH stands for the driver."""
    if not driver and Path("/proc/driver/nvidia/version").exists():
        pytest.skip("this machine has an NVIDIA driver")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if driver:
        (bin_dir / "nvidia-smi").write_text("#!/bin/sh\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"}
    env.pop("TORCH", None)
    out = subprocess.run(
        ["make", "-n", "-B", "install", f"VENV={tmp_path / 'venv'}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    pin = next(
        line.split("==")[1]
        for line in (REPO / "requirements/constraints.txt").read_text().splitlines()
        if line.startswith("torch==")
    )
    if driver:
        assert f"'torch=={pin}'" in out.stdout and "+cpu" not in out.stdout and ".installed-cuda" in out.stdout
    else:
        assert f"'torch=={pin}+cpu'" in out.stdout and ".installed-cpu" in out.stdout
    assert out.stdout.index("torch==") < out.stdout.index("-e '.[test]'")  # torch before anything resolves it


def test_targets_and_variants(monkeypatch):
    cfg = build_config({"model": {"name": "qwen3-tiny-random"}})
    machine = doctor.Machine("2.13.0", None, [], "x", {}, 8 * GIB, {})
    cpu = doctor.pick_target(cfg, machine)
    assert cpu.device == "cpu" and cpu.free_bytes == 8 * GIB
    card = doctor.pick_target(cfg, machine, gpu_memory_gib=24)
    assert card.device == "cuda" and card.free_bytes == 24 * GIB - doctor.CUDA_CONTEXT_BYTES
    names = [name for name, _ in doctor.variants(cfg, card)]
    assert names[:4] == [
        "as configured",
        "train.gradient_checkpointing=true",
        "train.pack_tokens=512",
        "--preset low-memory",
    ]
    assert "--preset low-memory" not in [name for name, _ in doctor.variants(cfg, cpu)]  # 4-bit needs CUDA
    low = doctor.with_overrides(cfg, dict(doctor.variants(cfg, card))["--preset low-memory"])
    assert low.model.quantize == "4bit" and low.train.gradient_checkpointing is True


def test_fit_verdict_names_the_first_setting_that_fits():
    target = doctor.Target("cuda", 10 * GIB, "a card")
    found = [
        doctor.Estimate("as configured", [], 14 * GIB),
        doctor.Estimate("train.gradient_checkpointing=true", ["x"], 11 * GIB),
        doctor.Estimate("--preset low-memory", ["y"], 4 * GIB),
    ]
    lines = doctor.fit_lines(found, target, bitsandbytes=False)
    assert lines[0] == "memory estimate: ~14.0 GiB peak on a card: does NOT fit"
    assert "to make it fit: --preset low-memory" in lines
    assert any("low-memory" in line and "install-gpu" in line for line in lines)
    ok = doctor.fit_lines(found[1:], doctor.Target("cuda", 12 * GIB, "a card"), bitsandbytes=True)
    assert ok[0].endswith("fits, 1.0 GiB to spare") and not any("to make it fit" in line for line in ok)


def test_a_modelscope_download_is_found_without_naming_the_source(tmp_path):
    """The README's tutorial: `download --source modelscope`, then `data inspect --model Qwen/Qwen3-4B`, chat and
    eval name the model without a source; they must find the ModelScope copy."""
    from lorakit.errors import LorakitError
    from lorakit.models import resolve_model
    from lorakit.models.hub import _MARKER, hub_dir

    with pytest.raises(LorakitError, match="not downloaded"):
        resolve_model("Qwen/Qwen3-4B", cache_dir=str(tmp_path))
    folder = hub_dir("Qwen/Qwen3-4B", "modelscope", tmp_path)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / _MARKER).write_text('{"id": "Qwen/Qwen3-4B", "source": "modelscope"}')
    assert resolve_model("Qwen/Qwen3-4B", cache_dir=str(tmp_path)) == folder
    assert resolve_model("Qwen/Qwen3-4B", "modelscope", str(tmp_path)) == folder
    with pytest.raises(LorakitError, match="not downloaded"):  # an explicit source still means that hub only
        resolve_model("Qwen/Qwen3-4B", "hf", str(tmp_path))


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_install_gpu_pins_bitsandbytes_and_keeps_vllm_apart(tmp_path):
    out = subprocess.run(
        ["make", "-n", "-B", "install-gpu", f"VENV={tmp_path / 'venv'}", "TORCH=cuda"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    pins = dict(
        line.split("==")
        for line in (REPO / "requirements/constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert (
        f"{tmp_path / 'venv'}/bin/python -m pip install -q -c requirements/constraints.txt "
        f"'bitsandbytes=={pins['bitsandbytes']}'" in out.stdout
    )
    # vLLM pins another torch: it goes to .venv-vllm, without the project's constraints
    assert f".venv-vllm/bin/python -m pip install -q 'vllm=={pins['vllm']}'" in out.stdout


@pytest.fixture(scope="module")
def estimate_bench(tmp_path_factory):
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    import doctor_estimate

    return doctor_estimate, tmp_path_factory.mktemp("estimate")


def test_estimate_against_the_h200_peaks(estimate_bench):
    """The dry-run estimate for the H200 runs of docs/benchmarks.md (Qwen3-4B's shape, the same data and
    settings) is an upper estimate of each measured peak, within the 1.5x it promises."""
    bench, work = estimate_bench
    rows = bench.h200_rows(work)
    assert [m for m, _, _ in rows] == ["c", "c_low", "c_mb4"]
    for method, estimate, measured in rows:
        assert measured <= estimate <= 1.5 * measured, (method, estimate, measured)


def test_the_tutorial_config_on_a_24_gib_card(estimate_bench):
    """configs/qwen3-4b-huanhuan.yaml fits a 24 GiB card as configured (pack_tokens auto sizes itself to
    the card), and with gradient checkpointing, the tutorial's own setting, it plans under the ~13 GB the
    tutorial reports."""
    bench, work = estimate_bench
    rows = {(card, settings): (est, fits) for card, settings, est, fits in bench.tutorial_rows(work, first=512)}
    small, h200 = rows[("24 GiB", "as configured")], rows[(f"{bench.H200_GIB:g} GiB", "as configured")]
    assert small[1] and small[0] <= h200[0]
    assert rows[("24 GiB", "train.gradient_checkpointing=true")][0] * GIB < 13e9


# --- will it fit, before the download -----------------------------------------------------------------


def _tiny_planner_config(name: str, **model):
    return build_config(
        {
            "model": {"name": name, **model},
            "data": {"path": str(REPO / "tests/fixtures/data/huanhuan.json"), "system": "你是甄嬛"},
            "train": {"max_steps": 2},
        }
    )


@pytest.mark.parametrize(
    "ref, size, params", [("Qwen/Qwen3-4B", "Qwen3-4B", 4_022_468_096), ("qwen/qwen3-8b", "Qwen3-8B", 8_190_735_360)]
)  # hub ids ignore case
def test_known_qwen3_shapes_count_the_published_parameters(tmp_path, lorakit_cache, ref, size, params):
    """The parameter counts of the published checkpoints (their safetensors hold 2 bytes per parameter:
    8,044,936,192 and 16,381,470,720 bytes); the 8B's embeddings are not tied, the 4B's are."""
    from lorakit.models.shapes import shapes_before_download
    from lorakit.training.plan import count_params

    found = shapes_before_download(ref, "modelscope", lorakit_cache, tmp_path / "shapes", str(tmp_path / "hf"))
    assert found.source == (
        f"{ref} is not downloaded; estimated from the {size} shapes lorakit knows, "
        "tokens counted with the Qwen3 tokenizer"
    )
    assert count_params(found.folder) == params
    assert (found.folder / "tokenizer.json").is_file() and not list(found.folder.glob("*.safetensors"))


def test_known_shapes_agree_with_the_random_built_ins(tmp_path, lorakit_cache):
    """Two tables of the same facts: the doctor's Qwen3 sizes and the random built-ins' (models/builtin.py)."""
    from lorakit.models.builtin import qwen3_config
    from lorakit.models.shapes import shapes_before_download

    keys = (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "vocab_size",
        "tie_word_embeddings",
        "rms_norm_eps",
        "max_position_embeddings",
    )
    for ref, builtin in (("Qwen/Qwen3-0.6B", "qwen3-0.6b-random"), ("Qwen/Qwen3-4B", "qwen3-4b-random")):
        found = shapes_before_download(ref, "hf", lorakit_cache, tmp_path / builtin, str(tmp_path / "hf"))
        ours = json.loads((found.folder / "config.json").read_text())
        assert {k: ours[k] for k in keys} == {k: getattr(qwen3_config(builtin), k) for k in keys}


def test_a_config_json_in_the_hugging_face_cache_is_enough(tmp_path, lorakit_cache):
    """`hf download ORG/NAME config.json` alone: the estimate equals the one of a downloaded model of the
    same shapes (qwen3-tiny-random), the Qwen3 tokenizer counting the tokens."""
    from lorakit.models import resolve_model

    hf = tmp_path / "hf"
    snapshot = hf / "models--someorg--tiny-chat" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (hf / "models--someorg--tiny-chat" / "refs").mkdir()
    (hf / "models--someorg--tiny-chat" / "refs" / "main").write_text("0123abcd")
    shutil.copyfile(resolve_model("qwen3-tiny-random") / "config.json", snapshot / "config.json")
    cfg, source = doctor.model_for_estimate(_tiny_planner_config("someorg/tiny-chat"), tmp_path / "work", str(hf))
    assert source == (
        "model shapes: someorg/tiny-chat is not downloaded; estimated from its config.json alone "
        f"(the Hugging Face cache, {snapshot / 'config.json'}), tokens counted with the Qwen3 "
        "tokenizer standing in for its own (not in the cache)"
    )
    target = doctor.Target("cpu", 8 * GIB, "the CPU")
    downloaded, line = doctor.model_for_estimate(_tiny_planner_config("qwen3-tiny-random"), tmp_path, str(hf))
    assert line == f"model shapes: from the model folder {resolve_model('qwen3-tiny-random')}"
    assert doctor.Planner()(cfg, target) == doctor.Planner()(downloaded, target)


def test_an_unfinished_download_gives_its_config_and_tokenizer(tmp_path, lorakit_cache):
    from lorakit.models import resolve_model
    from lorakit.models.hub import hub_dir

    cache = tmp_path / "cache"
    folder = hub_dir("someorg/tiny-chat", "modelscope", cache)
    folder.mkdir(parents=True)  # config and tokenizer arrived, the weights and the finished marker did not
    for f in resolve_model("qwen3-tiny-random").iterdir():
        if f.suffix != ".safetensors":
            shutil.copyfile(f, folder / f.name)
    cfg = _tiny_planner_config("someorg/tiny-chat", source="modelscope", cache_dir=str(cache))
    planned, source = doctor.model_for_estimate(cfg, tmp_path / "work", str(tmp_path / "hf"))
    assert source == (
        "model shapes: someorg/tiny-chat is not downloaded; estimated from its config.json alone "
        f"(an unfinished `lorakit download` in {folder}), tokens counted with its tokenizer"
    )
    assert (Path(planned.model.name) / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()


def test_a_model_without_known_shapes_says_how_to_get_them(tmp_path):
    from lorakit.errors import LorakitError

    with pytest.raises(LorakitError) as e:
        doctor.model_for_estimate(
            _tiny_planner_config("someorg/unknown", cache_dir=str(tmp_path)), tmp_path, str(tmp_path / "hf")
        )
    assert str(e.value) == (
        "model someorg/unknown is not downloaded and lorakit does not know its shapes: run "
        "`lorakit download someorg/unknown`, or fetch its config.json alone (`hf download "
        "someorg/unknown config.json`) for an estimate before the download"
    )
    with pytest.raises(LorakitError, match="does not exist"):  # a missing local folder: the usual error
        doctor.model_for_estimate(_tiny_planner_config(str(tmp_path / "nope")), tmp_path)
