"""Training's fast paths are config (train.attention, train.packed_attention, train.fused): recorded with
the config, checked on --resume like every key that changes the mathematics, refused where they cannot
run as asked; the environment variables that chose them before are refused, not silently ignored."""

import json
import re

import pytest

from lorakit import settings
from lorakit.config import RunConfig, load_config
from lorakit.errors import LorakitError
from lorakit.training import resume
from lorakit.training.distributed import Distributed
from lorakit.training.plan import plan_run


def _record(**train) -> dict:
    cfg = RunConfig().model_dump(mode="json")
    cfg["train"].update(train)
    return {"config": cfg, "data": "abc", "base_model": {"weights_fingerprint": "f1"}}


def test_a_resume_under_another_attention_or_fused_setting_is_refused():
    before = _record()
    diff = resume.changes(before, _record(attention="fallback", fused="off"))
    assert diff == ['train.attention: "auto" -> "fallback"', 'train.fused: "auto" -> "off"']
    state = {"trained_with": before, "step": 4}
    with pytest.raises(LorakitError, match=re.escape('train.fused: "auto" -> "on"') + ".*--resume-anyway") as e:
        resume.check_resume(resume.Path("c/checkpoint-4"), state, _record(fused="on"), False, print)
    assert "\n" not in str(e.value)
    record = resume.check_resume(
        resume.Path("c/checkpoint-4"), state, _record(attention="packed"), True, lambda m: None
    )
    assert record["resume_anyway"] and record["changed"] == ['train.attention: "auto" -> "packed"']
    # per-sample calls or one masked call per row: the same attention, a speed choice like pack_tokens
    assert resume.changes(before, _record(packed_attention="whole_row")) == []


def test_a_checkpoint_from_before_these_keys_resumes_as_their_defaults():
    old = _record()
    for key in ("attention", "packed_attention", "fused"):
        del old["config"]["train"][key]
    assert resume.changes(old, _record()) == []
    assert resume.changes(old, _record(fused="off")) == ['train.fused: "auto" -> "off"']


def test_the_keys_load_from_a_file_as_typed_and_are_written_back(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  attention: fallback\n  packed_attention: whole_row\n  fused: off\n")
    cfg = load_config(path)  # an unquoted `off` is YAML 1.1's False: taken as the documented value
    assert (cfg.train.attention, cfg.train.packed_attention, cfg.train.fused) == ("fallback", "whole_row", "off")
    assert load_config(path, ["train.fused=on"]).train.fused == "on"
    assert RunConfig().train.attention == "auto" and RunConfig().train.fused == "auto"
    path.write_text("train:\n  attention: mask\n")
    with pytest.raises(
        LorakitError, match=re.escape("c.yaml:2: train.attention: Input should be 'auto', 'packed' or 'fallback'")
    ):
        load_config(path)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fastpaths") / "d.json"
    path.write_text(
        json.dumps([{"instruction": f"question {i}?", "input": "", "output": f"answer {i}."} for i in range(6)])
    )
    return path


def _cfg(data_file, *more):
    return load_config(None, ["model.name=qwen3-tiny-random", f"data.path={data_file}", "train.device=cpu", *more])


@pytest.mark.parametrize(
    "overrides, world, message",
    [
        (["train.attention=packed", "train.packing=false"], 1, "train.attention: packed needs train.packing=true"),
        (["train.fused=on", "train.fsdp=true"], 2, "train.fused: on cannot run sharded"),
    ],
)
def test_settings_that_cannot_run_as_asked_are_refused_before_loading(data_file, overrides, world, message):
    with pytest.raises(LorakitError, match=re.escape(message)) as e:
        plan_run(_cfg(data_file, *overrides), Distributed(world=world))
    assert "\n" not in str(e.value)


def test_fused_on_off_and_auto_pick_the_weight_dtype(data_file):
    """train.fused decides whether frozen weights may stay bf16 (fused forwards upcast per call): off
    loads fp32 where bf16 would be emulated, as peft's forwards cannot upcast."""
    from lorakit.models.precision import cpu_has_fast_bf16

    dtypes = {
        mode: plan_run(
            _cfg(data_file, "model.dtype=bfloat16", "train.precision=fp32", f"train.fused={mode}")
        ).weight_dtype
        for mode in ("auto", "on", "off")
    }
    assert dtypes["auto"] == dtypes["on"] == "bfloat16"
    assert dtypes["off"] == ("bfloat16" if cpu_has_fast_bf16() else "float32")


@pytest.mark.parametrize("name", sorted(settings.RETIRED))
def test_a_retired_fast_path_variable_is_refused_with_its_config_key(data_file, name, monkeypatch):
    monkeypatch.setenv(name, "fallback")
    with pytest.raises(LorakitError, match=re.escape(f"{name}: no longer read")) as e:
        plan_run(_cfg(data_file))
    assert settings.RETIRED[name].split(" ")[0] in str(e.value) and "\n" not in str(e.value)


def test_settings_read_each_variable_when_asked(monkeypatch, tmp_path):
    for name in (settings.LLAMA_SERVER, settings.JUDGE_API_KEY, "OPENAI_API_KEY", settings.DEBUG):
        monkeypatch.delenv(name, raising=False)
    assert settings.llama_server() is None and settings.judge_api_key() is None and not settings.debug()
    monkeypatch.setenv("OPENAI_API_KEY", "k2")
    assert settings.judge_api_key() == "k2"
    monkeypatch.setenv(settings.JUDGE_API_KEY, "k1")
    assert settings.judge_api_key() == "k1"
    monkeypatch.setenv(settings.DEBUG, "1")
    monkeypatch.setenv(settings.CACHE, str(tmp_path))
    assert settings.debug() and settings.cache_dir() == tmp_path


def test_settings_is_a_leaf():
    """Any module may read a variable: settings imports nothing from lorakit but its error type."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(settings))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {m for m in imported if m and m.startswith("lorakit")} == {"lorakit.errors"}
