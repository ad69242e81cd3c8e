"""Config: every shipped YAML loads; overrides; errors name file, line and key."""

from pathlib import Path

import pytest

from lorakit.config import RunConfig, field_docs, load_config, parse_override
from lorakit.errors import LorakitError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)


def test_tutorial_config_keeps_the_tutorial_settings():
    cfg = load_config(REPO / "configs" / "qwen3-4b-huanhuan.yaml")
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (8, 32, 0.1)
    assert cfg.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert (cfg.train.batch_size, cfg.train.grad_accum, cfg.train.epochs, cfg.train.lr) == (4, 4, 3, 1e-4)
    assert (cfg.data.max_length, cfg.train.save_steps, cfg.data.thinking) == (1024, 100, "off")
    assert cfg.data.system == "现在你要扮演皇帝身边的女人--甄嬛"
    assert "swanlab" in cfg.tracking.backends


def test_overrides_are_typed_and_dotted():
    cfg = load_config(None, ["train.lr=2e-4", "lora.target_modules=[q_proj,v_proj]", "data.system=你好"])
    assert cfg.train.lr == 2e-4 and cfg.lora.target_modules == ["q_proj", "v_proj"] and cfg.data.system == "你好"
    assert parse_override("a.b=") == ("a.b", "")
    with pytest.raises(LorakitError, match="expected key=value"):
        parse_override("train.lr")


@pytest.mark.parametrize(
    "item, key, expected",
    [
        ("data.thinking=off", "data.thinking", "off"),  # YAML 1.1 alone reads off/on as booleans
        ("data.thinking=on", "data.thinking", "on"),
        ("data.thinking=auto", "data.thinking", "auto"),
        ("data.system=yes", "data.system", "yes"),  # a str field keeps the text
        ("data.system=Answer: briefly", "data.system", "Answer: briefly"),  # not a one-key mapping
        ("model.name=2024", "model.name", "2024"),
        ("tracking.experiment=007", "tracking.experiment", "007"),
        ("data.system=null", "data.system", None),  # Optional: null clears it
        ("train.gradient_checkpointing=off", "train.gradient_checkpointing", False),  # a bool field: off is false
        ("train.gradient_checkpointing=auto", "train.gradient_checkpointing", "auto"),
        ("train.pack_tokens=512", "train.pack_tokens", 512),
        ("train.pack_tokens=null", "train.pack_tokens", None),
        ("train.lr=2e-4", "train.lr", 2e-4),  # YAML 1.1 reads 2e-4 as text; the float field takes the number
        ("data.dedup=false", "data.dedup", False),
        ("data.path=[a.json, b.json]", "data.path", ["a.json", "b.json"]),
    ],
)
def test_overrides_take_each_fields_values_as_typed(item, key, expected):
    assert parse_override(item) == (key, expected)
    section, name = key.split(".")
    extra = ["data.path=[a.json, b.json]", "data.weights=[1, 2]"] if key == "data.path" else []
    value = getattr(getattr(load_config(None, [item, *extra]), section), name)
    assert value == expected and type(value) is type(expected)


def test_an_override_error_names_the_argument_not_the_file(tmp_path):
    """The file is fine; the command line is wrong: the error quotes the argument as typed."""
    import lorakit

    p = tmp_path / "c.yaml"
    p.write_text("data:\n  thinking: 'on'\ntrain:\n  lr: 1.0e-4\n")
    cases = {
        "data.thinking=maybe": "data.thinking=maybe: Input should be 'off', 'on' or 'auto'",
        "data.thinking=no": "data.thinking=no: Input should be 'off', 'on' or 'auto'",
        "train.lr=fast": "train.lr=fast: Input should be a valid number, unable to parse string as a number",
        "train.epochs=-1": "train.epochs=-1: Input should be greater than 0",
        "train.lrr=1": "train.lrr=1: unknown key 'train.lrr'; did you mean train.lr?",
    }
    for item, message in cases.items():
        with pytest.raises(LorakitError) as e:
            load_config(p, [item])
        assert str(e.value) == message
        with pytest.raises(LorakitError) as e:  # the CLI's path: parsed, then handed to the Python API
            lorakit.train(p, **dict([parse_override(item)]))
        assert str(e.value) == message
    with pytest.raises(LorakitError) as e:  # the Python API's own overrides, flat or nested
        lorakit.train(p, **{"data.thinking": "maybe"})
    assert str(e.value) == "data.thinking=maybe: Input should be 'off', 'on' or 'auto'"
    with pytest.raises(LorakitError) as e:
        lorakit.train(p, train={"lr": 0, "epochs": 1})
    assert str(e.value) == "train.lr=0: Input should be greater than 0"
    assert load_config(p, {"data.thinking": "off"}).data.thinking == "off"
    p.write_text("data:\n  thinking: maybe\n")  # the file's own mistake still names the file and line
    with pytest.raises(LorakitError) as e:
        load_config(p, ["train.lr=2e-4"])
    assert str(e.value) == f"{p}:2: data.thinking: Input should be 'off', 'on' or 'auto' (got 'maybe')"


def test_data_thinking_off_on_the_command_line(tmp_path, capsys):
    """The issue's report: `lorakit train CONFIG data.thinking=off` on a config that says on."""
    from lorakit.cli.main import main

    p = tmp_path / "c.yaml"
    p.write_text("model:\n  name: qwen3-tiny-random\ndata:\n  thinking: 'on'\n")
    for item, error in [
        ("data.thinking=off", "data.path: no training data given"),  # the config passed
        ("data.thinking=maybe", "data.thinking=maybe: Input should be 'off', 'on' or 'auto'"),
    ]:
        with pytest.raises(SystemExit) as done:
            main(["train", str(p), item, "--dry-run"])
        assert done.value.code == 2
        assert capsys.readouterr().err.startswith(f"error: {error}")


def test_unknown_key_names_file_line_and_suggests(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  name: x\ntrain:\n  lrr: 1\n")
    with pytest.raises(LorakitError) as e:
        load_config(p)
    assert str(e.value) == f"{p}:4: unknown key 'train.lrr'; did you mean train.lr?"


def test_wrong_type_and_range(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  batch_size: 0\n")
    with pytest.raises(LorakitError, match=r"c.yaml:2: train.batch_size: .*greater than 0"):
        load_config(p)
    with pytest.raises(LorakitError, match="train.epochs"):
        load_config(None, ["train.epochs=many"])


def test_bad_files(tmp_path):
    with pytest.raises(LorakitError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(LorakitError, match="mapping of sections"):
        load_config(p)
    p.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(LorakitError, match="not UTF-8"):
        load_config(p)


def test_every_field_is_documented():
    rows = field_docs()
    assert len(rows) > 40
    assert all(doc for _, _, doc in rows), [k for k, _, doc in rows if not doc]


def test_fsdp_cannot_shard_a_quantized_base():
    assert load_config(None, ["train.fsdp=true"]).train.fsdp is True
    with pytest.raises(LorakitError, match="train.fsdp: cannot shard a quantized") as e:
        load_config(None, ["train.fsdp=true", "model.quantize=4bit"])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "value, device, packing, expected",
    [
        (4096, "cpu", True, (4096, True)),  # a number is taken as given, and filled
        (None, "cuda:0", True, None),  # null: batch_size samples per forward
        ("auto", "cpu", True, (512, False)),  # auto on CPU: batch_size (4) samples, rows capped at 4 x 128 tokens
        (4096, "cpu", False, None),  # only packed rows have a token budget
    ],
)
def test_pack_tokens_budget(value, device, packing, expected):
    from lorakit.training.batching import TokenBudget
    from lorakit.training.plan import pack_budget

    expected = TokenBudget(*expected) if expected else None

    t = load_config(
        None, [f"train.pack_tokens={'null' if value is None else value}", f"train.packing={str(packing).lower()}"]
    ).train
    assert pack_budget(t, device, Path("unused"), "float32", False) == expected


def test_cpu_cap_counts_a_preference_pair_as_two_rows():
    """auto on CPU caps a forward at 128 tokens per row: a DPO pair is two rows (chosen and rejected), so
    TRL's batch of 4 pairs (~540 tokens here) stays one forward instead of being split at 512."""
    from lorakit.training.batching import TokenBudget
    from lorakit.training.objectives import objective_for
    from lorakit.training.plan import pack_budget

    for method, rows in (("sft", 1), ("dpo", 2), ("orpo", 2), ("simpo", 2), ("kto", 1)):
        cfg = load_config(None, [f"train.method={method}", "train.batch_size=4"])
        per_unit = objective_for(cfg).rows_per_unit
        assert per_unit == rows, method
        budget = pack_budget(cfg.train, "cpu", Path("unused"), "float32", False, per_unit)
        assert budget == TokenBudget(128 * 4 * rows, fill=False), method


def test_low_memory_preset_is_qlora_with_checkpointing():
    from lorakit.config import PRESETS

    cfg = load_config(None, PRESETS["low-memory"])
    assert cfg.model.quantize == "4bit" and cfg.train.gradient_checkpointing is True


def test_plan_sizes_activations_by_the_token_budget():
    """--dry-run's memory estimate follows train.pack_tokens: a step's samples in one forward cost more."""
    from types import SimpleNamespace

    from lorakit.models import resolve_model
    from lorakit.training.plan import estimate as _plan

    def samples(n_tokens):
        return [{"input_ids": [1] * n_tokens, "labels": [-100] * 50 + [1] * (n_tokens - 50)} for _ in range(32)]

    data = SimpleNamespace(train=samples(100), eval=[])

    def estimate(*overrides, data=data):
        cfg = load_config(None, ["train.batch_size=4", "train.grad_accum=4", *overrides])
        return _plan(cfg, data, resolve_model("qwen3-tiny-random"), 16, 2, "float32", "cpu").memory_gb

    assert estimate("train.pack_tokens=1600") > estimate("train.pack_tokens=null") == estimate("train.pack_tokens=400")
    assert estimate("train.pack_tokens=null") == estimate()  # on CPU auto only caps: 4 x 100 tokens fit 4 x 128
    long = SimpleNamespace(train=samples(300), eval=[])  # 4 x 300 tokens: auto caps the row at 512
    assert (
        estimate("train.pack_tokens=null", data=long)
        > estimate(data=long)
        == estimate("train.pack_tokens=512", data=long)
    )
    # bf16 weights computing in fp32 (a CPU without native bf16): the activations are fp32
    cfg = load_config(None, ["train.batch_size=4", "train.grad_accum=4"])
    half = [
        _plan(cfg, data, resolve_model("qwen3-tiny-random"), 16, 2, "bfloat16", "cpu", c).memory_gb
        for c in ("bfloat16", "float32")
    ]
    assert half[0] < half[1] < estimate()


@pytest.mark.parametrize(
    "override",
    [
        "train.lr=inf",
        "train.lr=.nan",
        "train.lr=-1e-4",
        "train.lr=0",
        "lora.alpha=.inf",
        "train.max_grad_norm=nan",
        "data.weights=[-1]",
    ],
)
def test_values_that_can_only_be_wrong_are_refused(override):
    key = override.split("=")[0]
    extra = ["data.path=[a.json]"] if key == "data.weights" else []
    with pytest.raises(LorakitError, match=key.replace(".", r"\.")):
        load_config(None, [override, *extra])


def test_duplicate_yaml_keys_are_an_error_with_file_and_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1.0e-4\n  epochs: 1\n  lr: 2.0e-4\n")
    with pytest.raises(LorakitError, match=rf"{path}:4: duplicate key 'train.lr' \(first set on line 2\)"):
        load_config(path)
    path.write_text("lora: {r: 8}\ntrain: {lr: 1.0e-4}\nlora: {alpha: 8}\n")
    with pytest.raises(LorakitError, match=rf"{path}:3: duplicate key 'lora'"):
        load_config(path)
