"""What a run was trained with, and the rule for resuming it: nothing that changes the mathematics of
training may change silently between the steps before a checkpoint and the steps after it.

Each checkpoint stores `trained_with`: the config, the prepared data's content hash and the base model's
identity. `--resume` compares them with the new run and refuses, in one line naming each changed key,
unless `--resume-anyway`; settings that only change logging, saving or speed may always change.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from lorakit.config import RunConfig
from lorakit.errors import LorakitError

# May differ on resume: where and how often things are logged or saved, and exact-arithmetic speed knobs
# (packed_attention: per-sample calls or one masked call compute the same attention). train.attention and
# train.fused are not among them: the fallback trains on padded batches, and the fused forwards decide
# whether frozen weights are held in bf16.
SAFE_KEYS = {
    "train.output_dir",
    "train.logging_steps",
    "train.save_steps",
    "train.save_total_limit",
    "train.eval_steps",
    "train.early_stopping_patience",
    "train.threads",
    "train.device",
    "train.pack_tokens",
    "train.share_prefix",
    "train.gradient_checkpointing",
    "train.packed_attention",
    # where the completions are sampled, not how: a restarted server on another port is the same run. What
    # does change the tokens (vLLM's sampler against lorakit's, for the same seeds) is the engine behind the
    # address, which the GRPO objective records in its state and checks on resume (objectives/grpo.py).
    "train.generation_server",
}
SAFE_SECTIONS = ("tracking.",)
# Compared by content instead (a moved data file or model folder is the same run).
BY_CONTENT = {"data.path", "data.eval_path", "model.name", "model.source", "model.cache_dir"}
_SAMPLE = 1 << 16  # bytes read at each sampled offset of a large weight file
_SAMPLES = 16


def trained_with(cfg, data_key: str, model_path: Path) -> dict:
    return {"config": cfg.model_dump(mode="json"), "data": data_key, "base_model": model_identity(model_path)}


def model_identity(model_path: Path) -> dict:
    """config.json's hash plus a fingerprint of the weight files: their sizes and sampled bytes, so that
    another model of the same shapes (a different seed or fine-tune) differs without reading GBs."""
    folder = Path(model_path)
    h = hashlib.sha256()
    total = 0
    for f in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        size = f.stat().st_size
        total += size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            if size <= _SAMPLE * _SAMPLES:
                h.update(fh.read())
            else:
                for i in range(_SAMPLES):
                    fh.seek((size - _SAMPLE) * i // (_SAMPLES - 1))
                    h.update(fh.read(_SAMPLE))
    config = folder / "config.json"
    return {
        "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest()[:16] if config.is_file() else None,
        "weights_fingerprint": h.hexdigest()[:16],
        "weight_bytes": total,
    }


def changes(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for every difference that alters training, in config order."""
    out = []
    a, b = _flatten(old.get("config", {})), _flatten(new.get("config", {}))
    # a key the checkpoint's lorakit did not have yet ran as that key's default does now
    a = {**{k: v for k, v in _defaults().items() if k in b}, **a}
    for key in list(a) + [k for k in b if k not in a]:
        if key in SAFE_KEYS or key in BY_CONTENT or key.startswith(SAFE_SECTIONS):
            continue
        if a.get(key) != b.get(key):
            out.append(f"{key}: {_short(a.get(key))} -> {_short(b.get(key))}")
    if old.get("data") != new.get("data"):
        out.append(f"data content: {old.get('data')} -> {new.get('data')} (data files, tokenizer or preparation)")
    if old.get("base_model") != new.get("base_model"):
        what = [
            k
            for k in ("config_sha256", "weights_fingerprint", "weight_bytes")
            if (old.get("base_model") or {}).get(k) != (new.get("base_model") or {}).get(k)
        ]
        out.append(
            f"base model: {', '.join(what)} differ ({_short(_flatten(old.get('config', {})).get('model.name'))}"
            f" -> {_short(_flatten(new.get('config', {})).get('model.name'))})"
        )
    return out


def check_resume(ckpt: Path, state: dict, now: dict, anyway: bool, say) -> dict:
    """Refuse (or, with `anyway`, allow and report) a resume that changes training; return the record of
    this resume, which the run keeps in state['resumes'] and writes to run.json."""
    before = state.get("trained_with")
    record = {
        "checkpoint": str(ckpt),
        "step": state.get("step", 0),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "changed": [],
        "resume_anyway": anyway,
    }
    if before is None:
        say(f"note: {ckpt} records no training settings (written by an older lorakit); resuming unchecked")
        record["changed"] = ["unknown (checkpoint has no record)"]
        return record
    diff = changes(before, now)
    if diff and not anyway:
        raise LorakitError(
            f"--resume would change how the run trains since {ckpt.name}: {'; '.join(diff)}; "
            f"restore them, start a new run, or pass --resume-anyway"
        )
    if diff:
        say(f"resuming anyway although these changed: {'; '.join(diff)}")
    record["changed"] = diff
    return record


def resume_history(ckpt: Path, now: dict, anyway: bool, say) -> list[dict]:
    """The checkpoint's list of earlier resumes plus this one (checked by `check_resume`)."""
    state = json.loads((Path(ckpt) / "state.json").read_text())
    return list(state.get("resumes") or []) + [check_resume(Path(ckpt), state, now, anyway, say)]


def _defaults() -> dict:
    return _flatten(RunConfig().model_dump(mode="json"))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "columns":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _short(v) -> str:
    text = json.dumps(v, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
