"""`lorakit doctor`: what this machine gives lorakit, and whether a run will fit, in a few seconds.

It reads what torch, /proc and the installed packages already know; it loads no model and runs no kernel,
so it answers in the time torch takes to import. With a config it prints the `train --dry-run` memory
estimate (the same planning code) against the memory the run would get, and the settings that bring the
estimate under it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

GIB = 2**30
# CPU flags that decide how fast bf16 runs on a CPU (precision.py picks bf16 autocast where one is present)
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@dataclass
class Gpu:
    index: int
    name: str
    total_bytes: int
    free_bytes: int
    capability: tuple[int, int]

    @property
    def bf16(self) -> bool:
        return self.capability >= (8, 0)  # Ampere and later compute bf16 natively

    def line(self) -> str:
        return (
            f"GPU {self.index}: {self.name}, {self.total_bytes / GIB:.1f} GiB "
            f"({self.free_bytes / GIB:.1f} free), compute {self.capability[0]}.{self.capability[1]}, "
            f"bf16 {'yes' if self.bf16 else 'no (lorakit trains in fp32 there; model.dtype: float16 halves the weights)'}"  # noqa: E501
        )


@dataclass
class Machine:
    torch_version: str
    cuda_build: str | None  # the CUDA version torch was built for; None for the CPU wheel
    gpus: list[Gpu]
    cpu_model: str
    cpu_flags: dict[str, bool]
    ram_available_bytes: int | None
    engines: dict[str, str | None] = field(default_factory=dict)

    def lines(self) -> list[str]:
        build = f"CUDA {self.cuda_build} build" if self.cuda_build else "CPU build"
        out = [f"torch {self.torch_version} ({build})"]
        if self.cuda_build and not self.gpus:
            out.append(
                "no GPU visible to torch (driver missing, or CUDA_VISIBLE_DEVICES hides them): training runs on the CPU"
            )
        if not self.cuda_build and _nvidia_driver_present():
            out.append(
                "an NVIDIA driver is present but torch is the CPU wheel: run `make install TORCH=cuda` "
                "(or `make clean install`) to get the CUDA build"
            )
        out += [g.line() for g in self.gpus]
        out.append(
            f"lorakit train (train.device auto) uses: {'GPU 0, ' + self.gpus[0].name if self.gpus else 'the CPU'}"
        )
        flags = ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in self.cpu_flags.items())
        native = (
            "native bf16"
            if self.cpu_flags.get("avx512_bf16") or self.cpu_flags.get("amx_bf16")
            else "bf16 emulated, so lorakit computes in fp32 on it"
        )
        out.append(f"CPU: {self.cpu_model}, {os.cpu_count()} cores; {flags}: {native}")
        if self.ram_available_bytes is not None:
            out.append(f"RAM: {self.ram_available_bytes / GIB:.1f} GiB available")
        for name, version in self.engines.items():
            out.append(f"{name}: {version or 'not installed (' + engine_hint(name) + ')'}")
        return out


def engine_hint(name: str) -> str:
    from lorakit.install import install_command

    return {
        "bitsandbytes": f"--preset low-memory needs it: {install_command('bitsandbytes', 'install-gpu')}",
        "vllm": "serve --engine vllm needs it, in an environment of its own since it pins another torch: "
        + install_command("vllm", "install-gpu"),
        "llama.cpp": "optional: export's K-quants (q4_k_m, q5_k_m, q6_k) call llama.cpp's own quantizer: "
        + _quantizer_install(),
    }[name]


def inspect_machine(cpuinfo: Path = Path("/proc/cpuinfo"), meminfo: Path = Path("/proc/meminfo")) -> Machine:
    import torch

    model, flags = cpu_features(cpuinfo)
    return Machine(
        torch_version=torch.__version__,
        cuda_build=torch.version.cuda,
        gpus=list_gpus(),
        cpu_model=model,
        cpu_flags=flags,
        ram_available_bytes=ram_available(meminfo),
        engines=engines(),
    )


def list_gpus() -> list[Gpu]:
    """Every GPU torch sees, with the memory free on it now (other processes' use included)."""
    import torch

    if not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        free, total = torch.cuda.mem_get_info(i)
        gpus.append(Gpu(i, props.name, total, free, (props.major, props.minor)))
    return gpus


def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, dict[str, bool]]:
    """The CPU's model name and the bf16-related flags from /proc/cpuinfo (all False where it is unreadable)."""
    model, flags = "unknown CPU", set()
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown CPU":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model, {f: f in flags for f in CPU_FLAGS}


def ram_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def engines() -> dict[str, str | None]:
    """Installed optional engines and their versions, found without importing them (vLLM takes seconds)."""
    from lorakit.install import vllm_executable

    found = {"bitsandbytes": _dist_version("bitsandbytes")}
    vllm = _dist_version("vllm")
    if vllm is None:
        exe = vllm_executable()
        vllm = f"`{exe}` (its own environment)" if exe else None
    found["vllm"] = vllm
    quantizer = _quantizer_found()
    tools = [t for t in ("llama-server",) if shutil.which(t)]
    found["llama.cpp"] = ", ".join(filter(None, [quantizer, *tools])) or None
    return found


def _quantizer_found() -> str | None:
    """Where the pinned libllama that export's K-quants call is found (loaded once to check its build)."""
    from lorakit.errors import LorakitError
    from lorakit.exporting.quantize import PACKAGE, PACKAGE_VERSION, find_quantizer

    try:
        return f"{PACKAGE} {PACKAGE_VERSION} quantizer ({find_quantizer().where})"
    except LorakitError:
        return None


def _quantizer_install() -> str:
    from lorakit.exporting.quantize import INSTALL

    return INSTALL


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nvidia_driver_present() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


# --- will a run fit ---------------------------------------------------------------------------------

# a CUDA context and the driver take about this much of a card before any tensor (what an idle card
# shows used in nvidia-smi); --gpu-memory GIB plans for a card of GIB with this much less free
CUDA_CONTEXT_BYTES = int(0.5 * GIB)


@dataclass
class Target:
    """Where the run would train and the memory it would have there."""

    device: str  # "cuda" or "cpu"
    free_bytes: int
    label: str


@dataclass
class Estimate:
    settings: str  # what was changed from the config, as the user would type it
    overrides: list[str]
    peak_bytes: int

    def fits(self, target: Target) -> bool:
        return self.peak_bytes <= target.free_bytes


def pick_target(cfg, machine: Machine, gpu_memory_gib: float | None = None) -> Target:
    """The device `lorakit train` would use for `cfg` here, or a hypothetical card of `gpu_memory_gib`."""
    if gpu_memory_gib is not None:
        total = int(gpu_memory_gib * GIB)
        return Target(
            "cuda",
            total - CUDA_CONTEXT_BYTES,
            f"a {gpu_memory_gib:g} GiB GPU ({(total - CUDA_CONTEXT_BYTES) / GIB:.1f} GiB free after the CUDA context)",
        )
    if machine.gpus and cfg.train.device != "cpu":
        g = machine.gpus[int(os.environ.get("LOCAL_RANK", 0)) % len(machine.gpus)]
        return Target("cuda", g.free_bytes, f"GPU {g.index} ({g.name}, {g.free_bytes / GIB:.1f} GiB free)")
    return Target(
        "cpu",
        machine.ram_available_bytes or 0,
        f"the CPU ({(machine.ram_available_bytes or 0) / GIB:.1f} GiB RAM available)",
    )


def variants(cfg, target: Target) -> list[tuple[str, list[str]]]:
    """Settings that lower the peak, in the order they cost speed as far as known: checkpointing recomputes
    one forward (about a third more compute), smaller forwards ran 3.9x slower on the H200 (c_mb4 against
    c in docs/benchmarks.md), and the 4-bit base 1.8x slower, with the least memory."""
    from lorakit.config import PRESETS

    t = cfg.train
    out = [("as configured", [])]
    if t.gradient_checkpointing is not True:
        out.append(("train.gradient_checkpointing=true", ["train.gradient_checkpointing=true"]))
    small = 512 if target.device == "cuda" else 256
    if t.packing and (t.pack_tokens == "auto" or t.pack_tokens is None or t.pack_tokens > small):
        out.append((f"train.pack_tokens={small}", [f"train.pack_tokens={small}"]))
    if target.device == "cuda" and cfg.model.quantize == "none":
        out.append(("--preset low-memory", list(PRESETS["low-memory"])))
        if t.packing:
            out.append(
                (
                    f"--preset low-memory train.pack_tokens={small}",
                    [*PRESETS["low-memory"], f"train.pack_tokens={small}"],
                )
            )
    return out


def estimates(cfg, target: Target, plan_bytes) -> list[Estimate]:
    """The peak estimate of the config and of each variant; `plan_bytes(cfg, target)` is the planner."""
    return [
        Estimate(name, overrides, plan_bytes(with_overrides(cfg, overrides), target))
        for name, overrides in variants(cfg, target)
    ]


def model_for_estimate(cfg, workdir: Path, hf_cache: str | None = None):
    """`cfg` as the estimate plans it, and one line saying where the model's shapes come from: the model's
    folder, or for a hub id not downloaded yet, a folder in `workdir` with its shapes and no weights
    (models/shapes.py), so "will it fit" is answered before fetching gigabytes."""
    from lorakit.errors import LorakitError
    from lorakit.models import cache_root, resolve_model
    from lorakit.models.hub import is_hub_id
    from lorakit.models.shapes import shapes_before_download

    ref = cfg.model.name
    try:
        return cfg, f"model shapes: from the model folder {resolve_model(ref, cfg.model.source, cfg.model.cache_dir)}"
    except LorakitError:
        if not is_hub_id(ref):
            raise
    found = shapes_before_download(ref, cfg.model.source, cache_root(cfg.model.cache_dir), workdir / "shapes", hf_cache)
    if found is None:
        raise LorakitError(
            f"model {ref} is not downloaded and lorakit does not know its shapes: run `lorakit "
            f"download {ref}`, or fetch its config.json alone (`hf download {ref} config.json`) "
            "for an estimate before the download"
        )
    return with_overrides(cfg, [f"model.name={found.folder}"]), f"model shapes: {found.source}"


def with_overrides(cfg, overrides: list[str]):
    """`cfg` with `key=value` overrides applied, validated as load_config would."""
    from lorakit.config import _set_dotted, build_config, parse_override

    data = cfg.model_dump(mode="json")
    for item in overrides:
        _set_dotted(data, *parse_override(item))
    return build_config(data)


def fit_lines(estimates_: list[Estimate], target: Target, bitsandbytes: bool) -> list[str]:
    from lorakit.install import install_command

    first, rest = estimates_[0], estimates_[1:]
    verdict = "fits" if first.fits(target) else "does NOT fit"
    out = [
        f"memory estimate: ~{first.peak_bytes / GIB:.1f} GiB peak on {target.label}: {verdict}"
        + (f", {(target.free_bytes - first.peak_bytes) / GIB:.1f} GiB to spare" if first.fits(target) else "")
    ]
    for e in rest:
        note = (
            ""
            if bitsandbytes or "low-memory" not in e.settings
            else f" (needs bitsandbytes: {install_command('bitsandbytes', 'install-gpu')})"
        )
        out.append(f"  with {e.settings}: ~{e.peak_bytes / GIB:.1f} GiB{' (fits)' if e.fits(target) else ''}{note}")
    if not first.fits(target):
        fitting = [e for e in rest if e.fits(target)]
        out.append(
            f"to make it fit: {fitting[0].settings}"
            if fitting
            else "nothing here makes it fit: use a smaller model, lower data.max_length or a larger device"
        )
    out.append("(an upper estimate: the H200's measured peaks were 0.68-0.78x of it, docs/benchmarks.md)")
    return out


class Planner:
    """The `lorakit train --dry-run` estimate (training/plan.py's `estimate`, behind `plan_run`) of a config on
    a target. The model and the tokenized data are resolved once for all the variants of one config: the
    variants change only settings the estimate reads (quantize, checkpointing, pack_tokens)."""

    def __init__(self):
        self._inputs: dict[str, object] = {}

    def __call__(self, cfg, target: Target) -> int:
        from lorakit.training.plan import estimate

        i = self._resolve(cfg, target.device)
        plan = estimate(
            cfg,
            i.data,
            i.model_path,
            i.samples_per_step,
            i.n_steps,
            i.weight_dtype,
            i.device,
            i.compute_dtype,
            free_bytes=target.free_bytes if target.device == "cuda" else None,
        )
        return int(plan.memory_gb * 1e9)

    def _resolve(self, cfg, device: str):
        from lorakit.training.distributed import Distributed
        from lorakit.training.plan import resolve_inputs

        t = cfg.train  # what resolve_inputs reads; the variants change none of it
        key = json.dumps(
            [
                device,
                cfg.model.name,
                cfg.model.source,
                cfg.model.cache_dir,
                cfg.model.dtype,
                cfg.data.model_dump(mode="json"),
                cfg.tracking.model_dump(mode="json"),
                [t.batch_size, t.grad_accum, t.epochs, t.max_steps, t.precision, t.fsdp],
            ]
        )
        if key not in self._inputs:
            base = with_overrides(cfg, ["model.quantize=none"])  # resolve_inputs refuses 4-bit off CUDA
            self._inputs[key] = resolve_inputs(base, Distributed(), device)  # one process: doctor plans one
        return self._inputs[key]
