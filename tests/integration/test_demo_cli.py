"""`lorakit demo` end to end (shortened with --max-steps): train, eval report, merge, next commands."""

import json

import pytest
from lorakit_cli import lorakit


@pytest.mark.slow
def test_demo_runs_every_stage(tmp_path):
    out = lorakit("demo", "--out", tmp_path / "demo", "--max-steps", "3", timeout=1200)
    run = tmp_path / "demo" / "run"
    summary = json.loads((run / "run.json").read_text())
    assert summary["steps"] == 3
    # the demo replays the base model's answers, shipped with lorakit: none generated on a first run
    assert summary["data"]["replay_samples"] > 0 and summary["data"]["replay_generated"] == 0
    assert "replay: " in out.stdout
    result = json.loads((run / "eval.json").read_text())
    assert len(result["answers"]) == 12 and result["persona"]["n"] > 0
    assert (run / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert (tmp_path / "demo" / "merged" / "model.safetensors").exists()
    assert "held-out questions: base vs fine-tuned" in out.stdout
    assert "lorakit serve --model" in out.stdout and "report:" in out.stdout
