"""The public API's surface: lazy import, overrides in both spellings, one-line LorakitErrors."""

import json
import subprocess
import sys

import pytest

import lorakit


def test_import_is_lazy_and_all_names_resolve():
    code = (
        "import sys, lorakit; assert 'torch' not in sys.modules, 'import lorakit pulled in torch'; "
        "[getattr(lorakit, n) for n in lorakit.__all__]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stage_functions_stay_functions_once_every_module_is_imported():
    """A subpackage named like an API function would replace it on `lorakit` when imported (Python binds
    submodules onto their parent): the stage packages are named apart (training/, exporting/, eval/)."""
    import importlib
    import inspect
    import pkgutil

    for mod in pkgutil.walk_packages(lorakit.__path__, "lorakit."):
        if ".cli" not in mod.name and not mod.name.endswith("__main__"):
            importlib.import_module(mod.name)
    for name in ("train", "load", "merge", "evaluate", "benchmark", "export"):
        assert inspect.isfunction(getattr(lorakit, name)), f"lorakit.{name} is {getattr(lorakit, name)!r}"


def test_dotted_and_nested_overrides_agree():
    dotted = lorakit.load_config(None, {"train.lr": 3e-4, "lora.r": 4})
    nested = lorakit.load_config({"lora": {"r": 4}}, {"train": {"lr": 3e-4}})
    listed = lorakit.load_config(None, ["train.lr=3e-4", "lora.r=4"])
    assert dotted == nested == listed and dotted.lora.r == 4


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda tmp: lorakit.train(tmp / "missing.yaml"), "missing.yaml: config file not found"),
        (lambda tmp: lorakit.train(None, **{"train.lr": "fast"}), "train.lr=fast: Input should be a valid number"),
        (lambda tmp: lorakit.train(None, train={"lrr": 1}), "unknown key 'train.lrr'; did you mean train.lr?"),
        (lambda tmp: lorakit.train(None, preset="huge"), "--preset huge: unknown preset"),
        (lambda tmp: lorakit.Run(tmp), "not a lorakit run directory (no config.yaml)"),
    ],
)
def test_user_errors_raise_the_cli_messages(tmp_path, call, message):
    with pytest.raises(lorakit.LorakitError) as e:
        call(tmp_path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_dry_run_returns_the_plan_and_writes_nothing(tmp_path):
    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(8)]))
    plan = lorakit.train(
        None,
        dry_run=True,
        model={"name": "qwen3-tiny-random"},
        **{"data.path": str(data), "train.output_dir": str(tmp_path / "run"), "train.max_steps": 2},
    )
    assert plan.steps == 2 and plan.train_samples == 8
    assert not (tmp_path / "run").exists()
