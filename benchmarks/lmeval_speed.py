"""Time of `lorakit eval --tasks` per 100 multiple-choice items (4 choices each), base and fine-tuned.

Writes a local lm-eval task of N arithmetic questions and a run directory (the model's base plus a
LoRA adapter with random B on q_proj/v_proj) into a temporary folder, runs
`lorakit.eval.benchmarks.run_benchmarks` on it, and prints the time of each side per 100 items.

    .venv/bin/python benchmarks/lmeval_speed.py --model smollm2-135m-instruct --items 100 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def write_task(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    items = [
        {
            "question": f"What is {a} plus {b}?",
            "choices": [str(a + b), str(a + b + 1), str(a * b + 3), str(b)],
            "answer": (a * 7 + b) % 4,
        }
        for a, b in ((i % 10 + 1, i // 10 + 2) for i in range(n))
    ]
    (folder / "items.json").write_text(json.dumps(items))
    (folder / "speed_mc.yaml").write_text(
        f"task: speed_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {folder / 'items.json'}\n"
        'test_split: test\noutput_type: multiple_choice\ndoc_to_text: "Question: {{question}}\\nAnswer:"\n'
        'doc_to_choice: "{{choices}}"\ndoc_to_target: answer\nmetric_list:\n  - metric: acc\n'
    )
    return folder


def write_run(folder: Path, base: str) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    from lorakit import models
    from lorakit.config import ModelConfig, RunConfig, config_to_yaml

    path = models.resolve_model(base)
    model = get_peft_model(models.load_model(path), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    model.save_pretrained(folder / "adapter")
    (folder / "config.yaml").write_text(config_to_yaml(RunConfig(model=ModelConfig(name=base))))
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lorakit.eval.benchmarks import run_benchmarks

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["HF_DATASETS_CACHE"] = str(root / "datasets")
        tasks = write_task(root / "tasks", args.items)
        run = write_run(root / "run", args.model)
        started = time.perf_counter()
        section = run_benchmarks(run, "speed_mc", include_path=tasks)
        wall = time.perf_counter() - started
    t = section["timing"]
    per = 100 / args.items
    print(
        json.dumps(
            {
                "model": args.model,
                "items": args.items,
                "threads": args.threads,
                "base_s_per_100": round(t["base_s"] * per, 1),
                "finetuned_s_per_100": round(t["finetuned_s"] * per, 1),
                "tasks_s": t["tasks_s"],
                "load_s": t["load_s"],
                "total_s": round(wall, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
