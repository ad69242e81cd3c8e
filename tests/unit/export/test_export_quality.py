"""The quality `lorakit export` measures and writes in the card: top-1 agreement and loss change against
float32 on held-out answer tokens, taken from the run's own held-out split when it has one."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

from lorakit.config import DataConfig, ModelConfig, RunConfig
from lorakit.exporting import export_model
from lorakit.exporting.quality import heldout, measure, reference


def test_run_heldout_split_is_what_is_scored(tmp_path):
    from lorakit.models import resolve_model

    rows = [{"instruction": f"Question {i}?", "output": f"Answer number {i} from the lighthouse."} for i in range(10)]
    (tmp_path / "data.json").write_text(json.dumps(rows))
    config = RunConfig(model=ModelConfig(name="qwen3-tiny-random"),
                       data=DataConfig(path=str(tmp_path / "data.json"), eval_split=3))  # fmt: skip
    samples, source = heldout(resolve_model("qwen3-tiny-random"), SimpleNamespace(config=config), budget=1000)
    assert source == "the run's held-out split (eval_split 3.0)"
    assert len(samples) == 3  # the three held-out conversations, answer tokens only
    for ids, scored in samples:
        assert scored and all(0 <= t < len(ids) - 1 for t in scored)
    bare, builtin = heldout(resolve_model("qwen3-tiny-random"), None, budget=40)
    assert "built-in" in builtin and sum(len(s) for _, s in bare) == 40  # the budget bounds the cost


def test_f16_measures_as_float32_and_the_card_says_so(exports, tmp_path, capsys):
    exported = exports("qwen3-tiny-random")
    out = export_model(exported.merged, tmp_path / "out", quant="f16", quality_tokens=64)
    printed = capsys.readouterr().out
    line = next(line for line in printed.splitlines() if line.startswith("quality (f16 vs float32, 64 held-out"))
    assert "top-1 agreement 100.0%" in line
    card = (out / "README.md").read_text()
    assert "## Quantization quality" in card and "| 100.0% |" in card
    # the same measurement, by hand: f16 rounding moves the held-out loss by far less than a quant would
    ref = reference(exported.merged, None, 64)
    q = measure(next(out.glob("*.gguf")), exported.merged, ref, "f16")
    assert q.tokens == 64 and q.agreement == 1.0 and abs(q.loss_change) < 1e-3
    assert math.isclose(q.loss_fp32, sum(ref.nll) / 64)
