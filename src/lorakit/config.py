"""Typed run configuration: one YAML file plus dotted `key=value` overrides, checked before heavy work.

Every field has a default and a one-line description; unknown keys and wrong types are errors that
name the file, line and key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from lorakit.errors import LorakitError

# Named sets of overrides (`lorakit train CONFIG --preset NAME`), applied after the file and before
# the command line's own key=value overrides.
PRESETS: dict[str, list[str]] = {
    # QLoRA: the frozen base in 4-bit NF4 (bitsandbytes, CUDA) and only layer inputs kept for backward
    "low-memory": ["model.quantize=4bit", "train.gradient_checkpointing=true"],
}


class Section(BaseModel):
    # inf and nan are never a valid setting (train.lr=inf trained an all-NaN adapter to "completed")
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelConfig(Section):
    name: str = Field("smollm2-135m-instruct", description="built-in name, local HF folder, or hub id")
    source: Literal["hf", "modelscope"] = Field("hf", description="hub to download a hub id from")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="weight dtype; auto = bfloat16 on GPU, float32 on CPU; "
        "a half dtype becomes float32 on a CPU without native bf16 unless train.precision=bf16",
    )
    cache_dir: Optional[str] = Field(None, description="model cache (default $LORAKIT_CACHE or ~/.cache/lorakit)")
    quantize: Literal["none", "4bit", "8bit"] = Field(
        "none", description="load the frozen base quantised with bitsandbytes (QLoRA); CUDA only"
    )
    chat_template: Optional[str] = Field(
        None,
        description="chat template replacing the model's own: a .jinja file (relative to the config file) "
        "or a shipped one (smollm2-tools: SmolLM2 with tool calls); saved with the adapter, so chat, serve, "
        "eval and merge use it too",
    )


class DataConfig(Section):
    path: Union[str, list[str]] = Field("", description="file, folder or glob (or a list) of training data")
    format: Literal["auto", "alpaca", "sharegpt", "messages", "prompt_completion"] = Field(
        "auto", description="record schema; auto detects it per file"
    )
    columns: dict[str, str] = Field(
        default_factory=dict, description="rename source columns, e.g. {question: instruction}"
    )
    weights: list[float] = Field(default_factory=list, description="mixing weight per path (sampling with replacement)")
    system: Optional[str] = Field(None, description="system prompt added where a record has none")
    thinking: Literal["off", "on", "auto"] = Field("off", description="train reasoning: off, on, or per sample")
    train_on: Literal["all", "last"] = Field("all", description="which assistant turns carry loss")
    max_length: int = Field(1024, gt=8, description="tokens per sample; longer samples are truncated")
    eval_split: float = Field(0.0, ge=0, description="held-out share (<1) or count (>=1) for evaluation")
    eval_path: Optional[str] = Field(None, description="separate held-out file (overrides eval_split)")
    dedup: bool = Field(True, description="drop exact duplicate conversations")
    max_samples: Optional[int] = Field(None, gt=0, description="use at most this many training records")
    seed: int = Field(42, description="seed for splitting and mixing")
    replay: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="share of training samples that are replay: general "
        "prompts answered once by the base model itself (cached), so the fine-tune keeps "
        "general ability; 0 = off",
    )
    replay_prompts: Optional[str] = Field(
        None,
        description="replay prompts file (JSON/JSONL/text, as eval "
        "--prompts); default: lorakit's bundled set for the data's language",
    )
    language: Literal["auto", "en", "zh"] = Field(
        "auto", description="language of the data, for the bundled replay, retention and identity sets; auto = detected"
    )
    persona_keywords: list[str] = Field(
        default_factory=list,
        description="words that mark the persona in "
        "answers (eval's persona score); empty = persona_facts.json beside "
        "the data, else derived from the training answers",
    )


class LoraConfig(Section):
    r: int = Field(8, gt=0, description="LoRA rank")
    alpha: float = Field(16, gt=0, description="LoRA alpha (scale = alpha / r, or alpha / sqrt(r) with rslora)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA branch input")
    target_modules: Union[Literal["all-linear"], list[str]] = Field(
        "all-linear", description="module names to adapt, or all-linear"
    )
    use_rslora: bool = Field(False, description="rank-stabilised scaling")
    use_dora: bool = Field(False, description="weight-decomposed LoRA (slower)")
    modules_to_save: list[str] = Field(default_factory=list, description="extra modules trained in full")


class TrainConfig(Section):
    output_dir: str = Field("runs/run", description="run directory: adapter, checkpoints, metrics, config")
    epochs: float = Field(3, gt=0, description="passes over the training data")
    max_steps: Optional[int] = Field(None, gt=0, description="optimizer steps; overrides epochs")
    batch_size: int = Field(4, gt=0, description="samples per micro-batch (or per pack budget unit)")
    grad_accum: int = Field(4, gt=0, description="micro-batches per optimizer step")
    lr: float = Field(1e-4, gt=0, description="peak learning rate")
    lr_scheduler: Literal["linear", "cosine", "constant"] = Field("linear", description="decay after warmup")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="share of steps spent warming up")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping (0 = off)")
    logging_steps: int = Field(10, gt=0, description="log train loss every N optimizer steps")
    eval_steps: Optional[int] = Field(None, gt=0, description="evaluate every N steps (default: at save_steps)")
    save_steps: int = Field(100, gt=0, description="checkpoint every N optimizer steps")
    save_total_limit: int = Field(2, gt=0, description="keep the last K checkpoints (plus the best)")
    early_stopping_patience: Optional[int] = Field(None, gt=0, description="stop after N evals without improvement")
    seed: int = Field(42, description="seed for init, data order and dropout")
    packing: bool = Field(True, description="padding-free packing of samples into one row")
    share_prefix: bool = Field(
        True,
        description="with packing, compute the prompt prefix all samples of a "
        "micro-batch share (e.g. a fixed system prompt) once; exact",
    )
    pack_tokens: Union[None, int, Literal["auto"]] = Field(
        "auto",
        description="with packing, fill each forward with up to this many tokens of the step's samples "
        "instead of batch_size samples (same gradient, fewer launches); auto = sized to free GPU memory on "
        "CUDA; on CPU batch_size samples per forward, split where the row would pass 128 tokens per sample "
        "(a preference pair counts as two; bounds peak memory); null = batch_size samples, no cap",
    )
    attention: Literal["auto", "packed", "fallback"] = Field(
        "auto",
        description="training attention: packed = lorakit's, over packed rows (refused for a model whose "
        "attention it does not compute); fallback = transformers' own over padded batches; auto = packed where "
        "the model allows and train.packing is on, else fallback",
    )
    packed_attention: Literal["auto", "per_sample", "whole_row"] = Field(
        "auto",
        description="how packed attention runs a row: one causal call per sample, or one masked call for "
        "the whole row; auto = per_sample on CPU, whole_row on GPU; same results either way",
    )
    fused: Literal["auto", "on", "off"] = Field(
        "auto",
        description="lorakit's fused LoRA, SwiGLU and RMSNorm training forwards (which also let frozen "
        "weights stay in bf16 where bf16 is emulated); auto = on for CPU; off = peft's and transformers' own",
    )
    gradient_checkpointing: Union[bool, Literal["auto"]] = Field(
        False, description="recompute activations to save memory"
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="autocast dtype; auto = bf16 where supported"
    )
    threads: Optional[int] = Field(None, gt=0, description="CPU threads for torch (default: all cores)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where to train")
    fsdp: bool = Field(False, description="with several processes, shard the base too (FSDP2), not only the data")
    neftune_alpha: Optional[float] = Field(
        None,
        ge=0,
        description="NEFTune: uniform noise of alpha/sqrt(L*d) on "
        "the input embeddings while training (the paper uses 5); null = off",
    )
    # -- the objective (lorakit.training.objectives): sft, or preference tuning on pairs --------------------
    method: Literal["sft", "dpo", "orpo", "simpo", "kto", "grpo"] = Field(
        "sft",
        description="training objective: sft (answers from conversations); dpo, orpo or simpo (preference "
        "pairs: prompt, chosen, rejected); kto (prompt, completion and a boolean label, or pairs); grpo (prompts "
        "and reward functions; docs/grpo.md)",
    )
    dpo_beta: float = Field(
        0.1,
        gt=0,
        description="dpo: beta, how far the tuned model may move from the reference "
        "(the base with the adapter off); higher keeps it closer",
    )
    dpo_loss: Literal["sigmoid", "ipo", "hinge", "robust"] = Field(
        "sigmoid",
        description="dpo: loss type, as TRL names them: sigmoid (the DPO paper), ipo (length-normalised "
        "squared), hinge (SLiC), robust (noise-robust with train.label_smoothing)",
    )
    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="dpo with dpo_loss robust: assumed share of pairs whose labels are flipped; 0 = off",
    )
    rpo_alpha: Optional[float] = Field(
        None,
        ge=0,
        description="dpo: weight of an SFT term on the chosen answers "
        "(token-mean NLL, TRL's loss_type sft); null = off",
    )
    precompute_ref_logps: bool = Field(
        False,
        description="dpo: compute the reference log-probs of every pair once "
        "before training (cached in the run folder; resume reuses them) instead "
        "of a reference forward per step",
    )
    orpo_beta: float = Field(
        0.1,
        gt=0,
        description="orpo: weight of the odds-ratio term (the chosen answer's odds "
        "over the rejected one's) against the NLL of the chosen sequence (TRL's beta, the "
        "paper's lambda)",
    )
    simpo_beta: float = Field(
        2.0,
        gt=0,
        description="simpo: beta, the scale of the length-normalised log-prob margin (the SimPO paper uses 2 to 2.5)",
    )
    simpo_gamma: float = Field(
        0.5,
        ge=0,
        description="simpo: gamma, the target reward margin subtracted inside the sigmoid (TRL's simpo_gamma)",
    )
    kto_beta: float = Field(
        0.1,
        gt=0,
        description="kto: beta, how far the tuned model may move from the reference (the base with the adapter off)",
    )
    kto_desirable_weight: float = Field(
        1.0,
        gt=0,
        description="kto: weight of the desirable answers' losses (raise "
        "it when they are fewer than the undesirable ones)",
    )
    kto_undesirable_weight: float = Field(1.0, gt=0, description="kto: weight of the undesirable answers' losses")

    # -- GRPO (train.method grpo): completions sampled from the model, scored by reward functions ----------
    rewards: list[Union[str, dict]] = Field(
        default_factory=list,
        description='grpo: reward functions with TRL\'s signature: "module:function", '
        '"file.py:function" (beside the config) or {function, weight, args} (args: a factory\'s settings, as the '
        "built-ins in lorakit.training.rewards_builtin take them)",
    )
    num_generations: int = Field(4, ge=2, description="grpo: completions sampled per prompt (a group)")
    max_completion_length: int = Field(256, gt=0, description="grpo: new tokens per completion at most")
    temperature: float = Field(
        1.0, gt=0, description="grpo: sampling temperature; the loss scores the logits divided by it too, as TRL"
    )
    top_p: float = Field(1.0, gt=0, le=1, description="grpo: nucleus sampling (1 = off)")
    top_k: int = Field(0, ge=0, description="grpo: sample among the k likeliest tokens (0 = off)")
    beta: float = Field(
        0.0,
        ge=0,
        description="grpo: weight of the KL to the base model (the adapter off); "
        "0 = no reference forward (TRL's default)",
    )
    epsilon: float = Field(0.2, gt=0, lt=1, description="grpo: clip the probability ratio to 1 - epsilon ...")
    epsilon_high: Optional[float] = Field(
        None, gt=0, description="grpo: ... 1 + epsilon_high (DAPO uses 0.28); null = epsilon"
    )
    num_iterations: int = Field(
        1,
        gt=0,
        description="grpo: optimizer steps per generation batch (TRL's mu); "
        "> 1 keeps the rollout-time log-probs as the old policy and clips against them",
    )
    loss_type: Literal["dapo", "grpo", "bnpo", "dr_grpo"] = Field(
        "dapo",
        description="grpo: loss normalisation, as TRL names them: dapo = token sum / the step's completion "
        "tokens, grpo = mean of per-completion token means, bnpo = token mean per forward, dr_grpo = token sum / "
        "(completions x max_completion_length)",
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="grpo: advantages divided by the group's reward std, the batch's, or not (Dr. GRPO)"
    )
    mask_truncated_completions: bool = Field(
        False, description="grpo: completions cut by max_completion_length carry no loss"
    )
    kl_ratio_correction: bool = Field(
        True,
        description="grpo with beta > 0: the KL estimate times the probability ratio (TRL's use_bias_correction_kl)",
    )
    log_completions_steps: Optional[int] = Field(
        None,
        gt=0,
        description="grpo: every N steps, a few completions "
        "with their rewards go to completions.jsonl; null = logging_steps",
    )
    generation_server: Optional[str] = Field(
        None,
        description="grpo: sample through this OpenAI-compatible server (http://host:port, e.g. `lorakit serve "
        "--engine vllm --allow-runtime-lora`), which gets each step's adapter through vLLM's runtime LoRA API; "
        "null = in this process (docs/grpo.md)",
    )

    @field_validator("generation_server")
    @classmethod
    def _server_url(cls, url: Optional[str]) -> Optional[str]:
        if url is not None and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url):
            raise ValueError("expected http://host:port")
        return url

    @model_validator(mode="before")
    @classmethod
    def _fused_on_off(cls, data: Any) -> Any:
        # YAML 1.1 reads an unquoted `fused: on` / `off` in a config file as a boolean
        if isinstance(data, dict) and isinstance(data.get("fused"), bool):
            data = {**data, "fused": "on" if data["fused"] else "off"}
        return data


# train.* settings read by one method only (lorakit.training.objectives)
METHOD_KEYS = {
    "dpo_beta": "dpo",
    "dpo_loss": "dpo",
    "label_smoothing": "dpo",
    "rpo_alpha": "dpo",
    "precompute_ref_logps": "dpo",
    "orpo_beta": "orpo",
    "simpo_beta": "simpo",
    "simpo_gamma": "simpo",
    "kto_beta": "kto",
    "kto_desirable_weight": "kto",
    "kto_undesirable_weight": "kto",
    **dict.fromkeys(
        (
            "rewards",
            "num_generations",
            "max_completion_length",
            "temperature",
            "top_p",
            "top_k",
            "beta",
            "epsilon",
            "epsilon_high",
            "num_iterations",
            "loss_type",
            "scale_rewards",
            "mask_truncated_completions",
            "kl_ratio_correction",
            "log_completions_steps",
            "generation_server",
        ),
        "grpo",
    ),
}


class TrackingConfig(Section):
    backends: list[Literal["swanlab", "tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list, description="trackers besides the always-on metrics.jsonl"
    )
    project: str = Field("lorakit", description="project name in the tracker")
    experiment: Optional[str] = Field(None, description="run name (default: the output folder name)")
    swanlab_mode: Literal["local", "offline", "cloud", "disabled"] = Field("local", description="SwanLab mode")


class RunConfig(Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _check(self) -> "RunConfig":
        if self.data.weights and isinstance(self.data.path, list) and len(self.data.weights) != len(self.data.path):
            raise ValueError("data.weights needs one weight per data.path entry")
        if any(w <= 0 for w in self.data.weights):
            raise ValueError(f"data.weights: every weight must be positive (got {self.data.weights})")
        if isinstance(self.train.pack_tokens, int) and self.train.pack_tokens < 1:
            raise ValueError(
                f"train.pack_tokens: must be a positive token count, auto or null (got {self.train.pack_tokens})"
            )
        t = self.train
        if t.label_smoothing and t.dpo_loss != "robust":
            raise ValueError(
                f"train.label_smoothing: only the robust DPO loss uses it (train.dpo_loss is "
                f"{t.dpo_loss}); set train.dpo_loss=robust or train.label_smoothing=0"
            )
        # a method's own setting under another method would be silently ignored: refused
        changed = [
            k
            for k, method in METHOD_KEYS.items()
            if method != t.method
            and getattr(t, k) != TrainConfig.model_fields[k].get_default(call_default_factory=True)
        ]
        if changed:
            k = changed[0]
            owner = METHOD_KEYS[k]
            kind = (
                "a GRPO setting"
                if owner == "grpo"
                else "a preference-tuning setting"
                if t.method == "sft"
                else f"a {owner} setting"
            )
            raise ValueError(
                f"train.{k}: {kind}, but train.method is {t.method}; set train.method={owner} or remove it"
            )
        if t.method == "grpo" and not t.rewards:
            raise ValueError("train.rewards: GRPO needs at least one reward function (module:function)")
        if self.train.fsdp and self.model.quantize != "none":
            raise ValueError(
                "train.fsdp: cannot shard a quantized (QLoRA) base; set model.quantize=none or train.fsdp=false"
            )
        return self


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key, by dotted path."""


def _load_with_lines(text: str, source: str) -> tuple[dict, dict[str, int]]:
    lines: dict[str, int] = {}
    try:
        node = yaml.compose(text, Loader=_LineLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise LorakitError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if node is None:
        return {}, lines

    def walk(n, prefix):
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = f"{prefix}{k.value}"
                if key in lines:  # YAML would silently keep the last value
                    raise LorakitError(
                        f"{source}:{k.start_mark.line + 1}: duplicate key {key!r} (first set on line {lines[key]})"
                    )
                lines[key] = k.start_mark.line + 1
                walk(v, key + ".")

    walk(node, "")
    data = yaml.load(text, Loader=yaml.SafeLoader)
    if not isinstance(data, dict):
        raise LorakitError(f"{source}:1: the config must be a mapping of sections (model, data, lora, train, tracking)")
    return data, lines


def parse_override(item: str) -> tuple[str, Any]:
    """`train.lr=2e-4` -> ("train.lr", 0.0002): the value as the field's type takes it, as typed.

    The text is read as a YAML scalar or list, but YAML 1.1 also turns `off`, `on`, `yes`, `no` into
    booleans and `null` into None: where the field refuses what YAML made of the text and takes the text
    itself (`data.thinking=off`, `data.system=yes`, `model.name=2024`), the text is kept as typed.
    """
    if "=" not in item:
        raise LorakitError(f"override {item!r}: expected key=value, e.g. train.lr=2e-4")
    key, raw = item.split("=", 1)
    key = key.strip().lstrip("-")
    if raw == "":
        return key, ""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return key, raw
    field = _field(key)
    if field is None or (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
        return key, value  # an unknown key (build_config names it) or a whole section
    # the field's type with its bounds, so that a value out of range stays as typed for the error
    checker = TypeAdapter(Annotated[field.annotation, field], config=ConfigDict(allow_inf_nan=False))
    for candidate in (value, raw):
        try:
            return key, checker.validate_python(candidate)
        except ValidationError:
            pass
    # neither fits: the error shows the text as typed, unless YAML read a list or mapping from it
    return key, value if isinstance(value, (list, dict)) else raw


def _field(key: str):
    """The FieldInfo of config field `key` (dotted), or None for a key that names no field."""
    model: Any = RunConfig
    field = None
    for part in key.split("."):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = field.annotation
    return field


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    cur = data
    for p in parts[:-1]:
        nxt = cur.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise LorakitError(f"override {key}: {p} is not a section")
        cur = nxt
    cur[parts[-1]] = value


def build_config(
    data: dict, source: str = "<config>", lines: dict[str, int] | None = None, overrides: dict[str, str] | None = None
) -> RunConfig:
    """Validate a plain dict into a RunConfig; errors name source:line and the dotted key, or the
    override argument (`overrides`: dotted key -> `key=value` as given) that set the key."""
    lines = lines or {}
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        extra = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        argument = _nearest(overrides or {}, key, lines)
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {key!r}" + _suggest(key)
        elif isinstance(argument, str):  # the argument shows the key and the value
            msg = err["msg"]
        else:
            msg = f"{key}: {err['msg']} (got {err.get('input')!r})" if key else err["msg"]
        if isinstance(argument, str):
            raise LorakitError(f"{argument}: {msg}{extra}") from None
        where = f"{source}:{argument}" if argument else source
        raise LorakitError(f"{where}: {msg}{extra}") from None


def _nearest(overrides: dict[str, str], key: str, lines: dict[str, int]) -> str | int | None:
    """What set `key` or its nearest enclosing key: an override argument (str) or a file line (int)."""
    while key:
        if key in overrides:
            return overrides[key]
        if key in lines:
            return lines[key]
        key = key.rpartition(".")[0]
    return None


def _suggest(key: str) -> str:
    import difflib

    section, _, leaf = key.rpartition(".")
    model = RunConfig
    for part in section.split(".") if section else []:
        field = model.model_fields.get(part)
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return ""
        model = field.annotation
    close = difflib.get_close_matches(leaf, list(model.model_fields), n=1)
    return f"; did you mean {section + '.' if section else ''}{close[0]}?" if close else ""


def set_dotted(data: dict, key: str, value: Any) -> None:
    """Set `train.lr`-style `key` in a nested dict of config sections; a dict value merges into the section."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            set_dotted(data, f"{key}.{k}", v)
        return
    _set_dotted(data, key, value)


def load_config(path: str | Path | dict | None, overrides: list[str] | dict | None = None) -> RunConfig:
    """Read a YAML config (or a dict of sections, or start from defaults) and apply overrides: a list of
    `key=value` strings as on the command line, or a dict of dotted keys or nested sections.

    Example:
        >>> cfg = load_config("configs/demo.yaml", ["train.lr=2e-4"])
        >>> cfg = load_config({"model": {"name": "qwen3-tiny-random"}}, {"train": {"max_steps": 2}})
    """
    import copy

    data: dict = {}
    lines: dict[str, int] = {}
    source = "<defaults>"
    if isinstance(path, dict):
        data, source = copy.deepcopy(path), "<dict>"
    elif path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise LorakitError(f"{p}: config file not found")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise LorakitError(f"{p}: config is not UTF-8 text") from None
        data, lines = _load_with_lines(text, source)
        _anchor_reward_files(data, p.parent)
        _anchor_chat_template(data, p.parent)
    given: dict[str, str] = {}  # dotted key -> the override that set it, for errors
    if isinstance(overrides, dict):
        pairs = list(overrides.items())
        for key, value in pairs:
            given.update((k, f"{k}={_shown(v)}") for k, v in _leaves(key, value))
    else:
        pairs = [parse_override(item) for item in overrides or []]
        for item, (key, value) in zip(overrides or [], pairs):
            given.update((k, item if k == key else f"{k}={_shown(v)}") for k, v in _leaves(key, value))
    for key, value in pairs:
        set_dotted(data, key, value)
    return build_config(data, source, lines, given)


def _leaves(key: str, value: Any):
    """The dotted keys `set_dotted(data, key, value)` sets, with their values."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _leaves(f"{key}.{k}", v)
    else:
        yield key, value


def _shown(value: Any) -> str:
    """A value as it would be typed after `key=` (strings as they are, the rest in JSON/YAML flow style)."""
    import json

    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _anchor_reward_files(data: dict, folder: Path) -> None:
    """train.rewards entries "file.py:function" name a file beside the config: make them absolute, so the
    run folder's config.yaml (and a resume from another directory) finds the same file."""
    rewards = (data.get("train") or {}).get("rewards") if isinstance(data.get("train"), dict) else None
    if not isinstance(rewards, list):
        return
    for i, entry in enumerate(rewards):
        key = "function" if isinstance(entry, dict) else None
        spec = entry.get(key) if key else entry
        file, _, function = spec.rpartition(":") if isinstance(spec, str) else ("", "", "")
        if file.endswith(".py") and not Path(file).is_absolute():
            anchored = f"{(folder / file).resolve()}:{function}"
            if key:
                entry[key] = anchored
            else:
                rewards[i] = anchored


def is_template_name(value: str) -> bool:
    """model.chat_template values like `smollm2-tools` name a shipped template; anything else is a path."""
    import re

    return re.fullmatch(r"[a-z0-9][a-z0-9-]*", value) is not None


def _anchor_chat_template(data: dict, folder: Path) -> None:
    """model.chat_template names a file beside the config (or a shipped template): make a relative path
    absolute, as for train.rewards, so the run's config.yaml names the same file from anywhere."""
    model = data.get("model")
    value = model.get("chat_template") if isinstance(model, dict) else None
    if isinstance(value, str) and value and not is_template_name(value) and not Path(value).expanduser().is_absolute():
        model["chat_template"] = str((folder / value).resolve())


def config_to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def field_docs(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, description) for every field: the source for docs/config.md."""
    rows = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows += field_docs(ann, f"{prefix}{name}.")
        else:
            default = f.default_factory() if f.default_factory else f.default
            rows.append((f"{prefix}{name}", default, f.description or ""))
    return rows
