"""plan_run(cfg): the --dry-run plan (and `lorakit doctor`'s) from the config alone, no weights loaded."""

import json
import re

import pytest

from lorakit.config import load_config
from lorakit.errors import LorakitError
from lorakit.training.plan import plan_run


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "d.json"
    path.write_text(
        json.dumps([{"instruction": f"question {i}?", "input": "", "output": f"answer number {i}."} for i in range(22)])
    )
    return path


def _cfg(data_file, tmp_path, *more):
    return load_config(
        None,
        [
            "model.name=qwen3-tiny-random",
            f"data.path={data_file}",
            "data.eval_split=2",
            f"train.output_dir={tmp_path / 'run'}",
            "train.device=cpu",
            "train.batch_size=2",
            "train.grad_accum=2",
            "train.epochs=2",
            *more,
        ],
    )


def test_plan_counts_samples_steps_and_tokens(data_file, tmp_path):
    plan = plan_run(_cfg(data_file, tmp_path))
    assert (plan.train_samples, plan.eval_samples) == (20, 2)
    assert plan.samples_per_step == 4 and plan.steps == 10  # 20 samples / 4 per step x 2 epochs
    assert 0 < plan.supervised_tokens < plan.train_tokens
    assert plan.device == "cpu" and plan.model_params > 0 and plan.memory_gb > 0
    assert plan.lines()[1] == "steps: 10 optimizer steps of 4 samples"
    assert not (tmp_path / "run").exists()  # planning writes nothing


def test_plan_follows_max_steps(data_file, tmp_path):
    assert plan_run(_cfg(data_file, tmp_path, "train.max_steps=3")).steps == 3


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.path=", "data.path: no training data given"),
        ("model.quantize=4bit", "model.quantize: 4bit (QLoRA) needs a CUDA GPU"),
    ],
)
def test_plan_refuses_what_the_run_would_refuse(data_file, tmp_path, override, message):
    with pytest.raises(LorakitError, match=re.escape(message)):
        plan_run(_cfg(data_file, tmp_path, override))
