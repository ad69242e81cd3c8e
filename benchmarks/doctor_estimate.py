"""`lorakit doctor`'s memory estimate (the `train --dry-run` planning code) for Qwen3-4B's shape, set
beside the peaks measured on the H200 (docs/benchmarks.md), and the tutorial's job on a 24 GiB card.

Needs no GPU and no weights: the model folder holds only Qwen3-4B's config.json and the Qwen3 tokenizer
(the plan counts parameters from the config), and the data is the synthetic huanhuan-like set.

    .venv/bin/python benchmarks/doctor_estimate.py            # both tables, markdown on stdout

Rows of the first table are train_speed.py's methods as it ran them on the H200 (`--samples 512`,
batch 4 x accumulation 4, r=8 on the seven projections, bf16 weights, a 141 GiB card).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GIB = 2**30
H200_GIB = 139.7  # 143,771 MiB, what the lent H200 reported
# peaks measured on the H200 (torch.cuda.max_memory_allocated, GiB), docs/benchmarks.md "GPU (H200)"
MEASURED = {"c": 14.45, "c_low": 3.46, "c_mb4": 9.97}
METHOD_OVERRIDES = {
    "c": [],
    "c_low": ["model.quantize=4bit", "train.gradient_checkpointing=true"],
    "c_mb4": ["train.pack_tokens=null"],
}


def shape_only_model(name: str, out: Path) -> Path:
    """A folder with a built-in's config.json and tokenizer but no weights: enough to plan a run."""
    from lorakit.models import cache_root
    from lorakit.models.builtin import qwen3_config, qwen3_tokenizer_dir

    out.mkdir(parents=True, exist_ok=True)
    qwen3_config(name).save_pretrained(str(out))
    for f in qwen3_tokenizer_dir(cache_root()).iterdir():
        shutil.copy2(f, out / f.name)
    return out


def huanhuan_like(out: Path, first: int | None = None) -> Path:
    sys.path.insert(0, str(HERE))
    import make_huanhuan_like

    full = HERE / "data" / "huanhuan_like.json"
    if not full.exists():
        make_huanhuan_like.write(full)
    records = json.loads(full.read_text(encoding="utf-8"))
    out.write_text(json.dumps(records[:first] if first else records, ensure_ascii=False), encoding="utf-8")
    return out


def bench_config(model_dir: Path, train_file: Path, overrides: list[str]):
    """train_speed.py's lorakit run (method c) as a config, with a method's overrides."""
    sys.path.insert(0, str(HERE))
    from train_speed import SYSTEM, TARGETS

    from lorakit import doctor
    from lorakit.config import build_config

    cfg = build_config(
        {
            "model": {"name": str(model_dir), "dtype": "bfloat16"},
            "data": {"path": str(train_file), "system": SYSTEM},
            "lora": {"r": 8, "alpha": 32, "target_modules": TARGETS},
            "train": {"output_dir": "unused", "max_steps": 8, "batch_size": 4, "grad_accum": 4, "device": "cuda"},
        }
    )
    return doctor.with_overrides(cfg, overrides)


def h200_rows(work: Path) -> list[tuple[str, float, float]]:
    """(method, estimate GiB, measured GiB) for the H200 runs."""
    from lorakit import doctor

    model = shape_only_model("qwen3-4b-random", work / "qwen3-4b-shape")
    data = huanhuan_like(work / "train512.json", 512)
    card = doctor.Target("cuda", int(H200_GIB * GIB) - doctor.CUDA_CONTEXT_BYTES, "H200")
    planner = doctor.Planner()
    return [(m, planner(bench_config(model, data, o), card) / GIB, MEASURED[m]) for m, o in METHOD_OVERRIDES.items()]


def tutorial_rows(
    work: Path, cards_gib=(24.0, H200_GIB), first: int | None = None
) -> list[tuple[str, str, float, bool]]:
    """configs/qwen3-4b-huanhuan.yaml on the huanhuan-like set (all of it, or its `first` records), per card
    and variant."""
    from lorakit import doctor
    from lorakit.config import load_config

    model = shape_only_model("qwen3-4b-random", work / "qwen3-4b-shape")
    data = huanhuan_like(work / f"huanhuan_like-{first or 'all'}.json", first)
    cfg = load_config(
        ROOT / "configs" / "qwen3-4b-huanhuan.yaml",
        [f"model.name={model}", f"data.path={data}", "tracking.backends=[]"],
    )
    rows, planner = [], doctor.Planner()
    for gib in cards_gib:
        machine = doctor.Machine("", None, [], "", {}, None, {})
        target = doctor.pick_target(cfg, machine, gpu_memory_gib=gib)
        for e in doctor.estimates(cfg, target, planner):
            rows.append((f"{gib:g} GiB", e.settings, e.peak_bytes / GIB, e.fits(target)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    os.environ.setdefault("LORAKIT_CACHE", str(ROOT / "tests" / ".cache"))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lorakit-doctor-"))
    print("| H200 run (train_speed.py) | estimate (GiB) | measured (GiB) | estimate / measured |\n|---|---:|---:|---:|")
    for m, est, meas in h200_rows(work):
        print(f"| {m} | {est:.2f} | {meas:.2f} | {est / meas:.2f} |")
    print("\n| card | configs/qwen3-4b-huanhuan.yaml | estimate (GiB) | fits |\n|---|---|---:|---|")
    for card, settings, est, fits in tutorial_rows(work):
        print(f"| {card} | {settings} | {est:.2f} | {'yes' if fits else 'no'} |")


if __name__ == "__main__":
    main()
