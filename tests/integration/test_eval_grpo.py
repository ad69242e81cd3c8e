"""A tiny GRPO run (qwen3-tiny-random) tracked by TensorBoard and SwanLab (local mode), then the real
`lorakit eval` on it: held-out rewards base against tuned in eval.json, the terminal and report.html,
and the completion tables in the trackers' own files and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lorakit_cli import lorakit, write_config

BUILTIN = "lorakit.training.rewards_builtin"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("grpo_eval")
    data = tmp / "prompts.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(8))
    )
    config = write_config(
        tmp / "run.yaml",
        model={"name": "qwen3-tiny-random"},
        data={"path": str(data), "eval_split": 3},
        lora={"r": 4, "alpha": 8, "target_modules": "all-linear"},
        train={
            "method": "grpo",
            "output_dir": str(tmp / "run"),
            "max_steps": 2,
            "batch_size": 2,
            "grad_accum": 1,
            "logging_steps": 1,
            "save_steps": 2,
            "precision": "fp32",
            "threads": 1,
            "lr": 5e-3,
            "num_generations": 3,
            "max_completion_length": 4,
            "log_completions_steps": 1,
            "rewards": [
                {"function": f"{BUILTIN}:length_penalty", "args": {"target": 2}},
                {"function": f"{BUILTIN}:numeric_answer", "weight": 2.0, "args": {}},
            ],
        },
        tracking={"backends": ["tensorboard", "swanlab"], "project": "lorakit-test"},
    )
    lorakit("train", config)
    return tmp / "run"


def test_eval_of_a_grpo_run_scores_held_out_prompts_by_its_rewards(run):
    done = lorakit("eval", run, "--max-new-tokens", 4, "--seed", 5)
    result = json.loads((run / "eval.json").read_text())
    r = result["rewards"]
    assert (r["prompts"], r["k"]) == (3, 3)
    assert [f["name"] for f in r["rewards"]] == ["length", "numeric_match"]
    assert [f["checks_answer"] for f in r["rewards"]] == [False, True]
    for side in ("base", "finetuned"):
        greedy, sampled = r[side]["greedy"], r[side]["sampled"]
        assert 0 <= greedy["solved"] <= 3 and greedy["accuracy"] == greedy["solved"] / 3
        assert 0 <= sampled["passed"] <= 3 and sampled["pass_at_k"] == sampled["passed"] / 3
        assert set(greedy["per_function"]) == {"length", "numeric_match"}
    # The tuned greedy rollout is the trainer's own held-out eval: the same reward it logged at its end.
    logged = [row for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "eval_reward" in row]
    assert r["finetuned"]["greedy"]["reward"] == pytest.approx(logged[-1]["eval_reward"], abs=1e-6)
    assert len(r["items"]) == 3 and set(r["items"][0]) == {"prompt", "base", "finetuned"}
    assert result["loss"]["skipped"].startswith("a GRPO run")
    assert result["retention"]["n"] > 0  # today's retention questions, as for every run
    # the side-by-side prompts are the held-out prompts, their `answer` column the reference
    assert [a["prompt"] for a in result["answers"]] == [i["prompt"] for i in r["items"]]
    assert all(a["reference"] == str(2 * int(a["prompt"].split()[2])) for a in result["answers"])
    out = " ".join(done.stdout.split())
    assert "held-out accuracy, greedy (of 3 prompts)" in out and "held-out pass@3" in out
    page = (run / "report.html").read_text()
    assert "Held-out rewards: accuracy" in page and "Completions during training" in page
    assert "<h3>Step 2</h3>" in page


def test_completion_tables_reach_tensorboard_and_swanlab(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged = [json.loads(x) for x in (run / "completions.jsonl").read_text().splitlines()]
    assert [t["step"] for t in logged] == [1, 2]
    assert (run / "plots" / "reward.png").read_bytes()[:4] == b"\x89PNG"  # the reward curve
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    texts = {e.step: e.tensor_proto.string_val[0].decode() for e in events.Tensors("completions/text_summary")}
    assert sorted(texts) == [1, 2]
    header, rule, *rows = texts[2].splitlines()
    assert header == "| prompt | completion | reward | length | numeric_match |"
    assert len(rows) == len(logged[1]["completions"])
    assert rows[0].startswith(f"| {logged[1]['completions'][0]['prompt']} |")
    # SwanLab (local mode) keeps each logged table as an ECharts table file, named by its step
    files = sorted((run / "swanlog").glob("run-*/media/echarts/*.json"), key=lambda p: p.name)
    assert [p.name[:4] for p in files] == ["001-", "002-"]
    table = json.loads(files[-1].read_text())
    assert table["_swanLab"] == "table"
    assert [c["field"] for c in table["colDefs"]] == ["prompt", "completion", "reward", "length", "numeric_match"]
    assert [row["prompt"] for row in table["rowData"]] == [c["prompt"] for c in logged[1]["completions"]]
