"""`lorakit train` through the real CLI on a tiny Gemma2 (attention softcap, final softcap, sliding window):
it trains (transformers alone refuses it SDPA), and says in one line which paths run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from families import BY_NAME, build
from test_matrix import word_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from lorakit_cli import lorakit, write_config  # noqa: E402

TEMPLATE = "{% for m in messages %}t3 t4 {{ m.content }} t5 {% endfor %}{% if add_generation_prompt %}t3 t6 {% endif %}"


def test_gemma2_trains_and_the_run_says_which_paths_run(tmp_path):
    base = tmp_path / "gemma2"
    build(BY_NAME["gemma2"]).save_pretrained(base)
    tok = word_tokenizer(base)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(base)
    rows = [
        {
            "messages": [
                {"role": "system", "content": "t7 t8 t9 t10 t11 t12"},
                {"role": "user", "content": " ".join(f"t{20 + (i * 7 + j) % 250}" for j in range(12))},
                {"role": "assistant", "content": " ".join(f"t{30 + (i * 11 + j) % 250}" for j in range(30))},
            ]
        }
        for i in range(6)
    ]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = write_config(
        tmp_path / "run.yaml",
        model={"name": str(base)},
        data={"path": str(data)},
        lora={"r": 4, "alpha": 8},
        train={
            "output_dir": str(tmp_path / "run"),
            "max_steps": 2,
            "batch_size": 3,
            "grad_accum": 1,
            "logging_steps": 1,
            "save_steps": 10,
            "precision": "fp32",
            "threads": 1,
        },
    )
    proc = lorakit("train", cfg)
    out = proc.stdout + proc.stderr
    lines = [x for x in out.splitlines() if x.startswith("attention: ")]
    assert len(lines) == 1, out[-2000:]
    assert lines[0].startswith("attention: lorakit packed (sliding window 16, softcap 2)"), lines[0]
    assert "final softcap 3" in lines[0]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "completed"
    # what the config's autos resolved to on this CPU, recorded with the run
    assert run["fast_paths"]["attention"] == "lorakit_packed" and run["fast_paths"]["packed_attention"] == "per_sample"
    assert run["fast_paths"]["fused"]["lora"] > 0 and run["fast_paths"]["fallback_reason"] is None
