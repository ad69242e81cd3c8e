"""Reward functions for GRPO: loading them from `train.rewards`, calling them, checking what they return.

A reward function has TRL's signature, so a tutorial's functions run unchanged:

    def reward(prompts, completions, completion_ids, **columns) -> list[float | None]

`prompts` and `completions` are chat-message lists for chat data (a completion is
`[{"role": "assistant", "content": text}]`) and plain strings for `prompt` data, exactly as
`trl.GRPOTrainer` passes them; every other data column (a reference `answer`, say) arrives as a keyword
argument holding one value per completion. `None` means "does not apply to this sample", as in TRL:
it is left out of that function's mean, and a completion that no function scores gets advantage 0.

A config entry is either "module:function" (the function itself) or a mapping
`{function: "module:factory", weight: 2.0, args: {...}}`, where the factory is called with `args`
and returns the reward function (how the built-ins in `rewards_builtin` take their settings).
"module" is an importable module or a .py file, relative to the config's folder.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from lorakit.errors import LorakitError

BUILTIN_MODULE = "lorakit.training.rewards_builtin"


@dataclass
class Reward:
    """One reward function as the run uses it: its name in metrics, the callable and its weight."""

    name: str
    function: Callable[..., list]
    weight: float = 1.0


@dataclass
class Scores:
    """Rewards of one generation batch: `per_function` is [completions, functions] with NaN for None."""

    per_function: torch.Tensor
    names: list[str]
    weights: torch.Tensor
    total: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        # Weighted sum over the functions that scored a completion; NaN where none did (TRL's rule).
        self.total = (self.per_function * self.weights).nansum(dim=1)
        self.total[torch.isnan(self.per_function).all(dim=1)] = float("nan")

    def metrics(self) -> dict[str, float]:
        """reward, reward_std and each function's mean and std, over the completions it scored."""
        out = {"reward": _nanmean(self.total), "reward_std": _nanstd(self.total)}
        for i, name in enumerate(self.names):
            out[f"rewards/{name}/mean"] = _nanmean(self.per_function[:, i])
            out[f"rewards/{name}/std"] = _nanstd(self.per_function[:, i])
        return out


def load_rewards(entries: list, config_dir: str | Path | None = None) -> list[Reward]:
    """`train.rewards` entries -> Reward objects; a bad entry raises a one-line LorakitError."""
    if not entries:
        raise LorakitError("train.rewards: GRPO needs at least one reward function (module:function)")
    rewards, base = [], Path(config_dir or ".")
    for i, entry in enumerate(entries):
        where = f"train.rewards[{i}]"
        if isinstance(entry, str):
            spec, weight, args = entry, 1.0, None
        elif isinstance(entry, dict):
            unknown = set(entry) - {"function", "weight", "args"}
            if unknown or "function" not in entry:
                raise LorakitError(
                    f"{where}: a mapping takes function (required), weight and args; got {sorted(entry)}"
                )
            spec, weight, args = entry["function"], entry.get("weight", 1.0), entry.get("args")
        else:
            raise LorakitError(f"{where}: expected 'module:function' or a mapping, got {type(entry).__name__}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise LorakitError(f"{where}.weight: expected a finite number, got {weight!r}")
        function = _resolve(spec, base, where)
        name = spec.rpartition(":")[2]
        if args is not None:
            if not isinstance(args, dict):
                raise LorakitError(f"{where}.args: expected a mapping of keyword arguments, got {args!r}")
            try:
                function = function(**args)
            except TypeError as e:
                raise LorakitError(f"{where}.args: {spec} does not take these arguments: {e}") from None
            name = getattr(function, "__name__", name)
        if not callable(function):
            raise LorakitError(f"{where}: {spec} is not callable")
        rewards.append(Reward(_unique(name, [r.name for r in rewards]), function, float(weight)))
    return rewards


def score(
    rewards: list[Reward], prompts: list, completions: list, completion_ids: list[list[int]], columns: dict[str, list]
) -> Scores:
    """Call every reward function on the batch and check each answer.

    A function that raises, returns the wrong number of values, or a value that is not a finite number
    (None aside) stops the run with one line naming the function and the sample: a NaN must never
    reach the loss.
    """
    n = len(completions)
    table = torch.full((n, len(rewards)), float("nan"), dtype=torch.float32)
    for j, reward in enumerate(rewards):
        try:
            values = reward.function(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)
        except Exception as e:  # any failure in user code: name it instead of a traceback mid-step
            i = _failing_sample(reward.function, prompts, completions, completion_ids, columns)
            where = (
                f"on sample {i} (prompt {_preview(prompts[i])}, completion {_preview(completions[i])})"
                if i is not None
                else f"on the batch of {n}"
            )
            raise LorakitError(f"reward {reward.name} raised {type(e).__name__}: {_first_line(e)} {where}") from None
        try:
            values = list(values)
        except TypeError:
            raise LorakitError(
                f"reward {reward.name} returned {type(values).__name__}, expected a list of {n} numbers"
            ) from None
        if len(values) != n:
            raise LorakitError(
                f"reward {reward.name} returned {len(values)} values for {n} completions (one per completion expected)"
            )
        for i, value in enumerate(values):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise LorakitError(
                    f"reward {reward.name} returned {value!r} for sample {i} "
                    f"(prompt {_preview(prompts[i])}, completion {_preview(completions[i])}); "
                    "expected a finite number or None"
                )
            table[i, j] = float(value)
    return Scores(table, [r.name for r in rewards], torch.tensor([r.weight for r in rewards]))


def _failing_sample(function, prompts, completions, completion_ids, columns) -> int | None:
    """The first sample on which `function` raises when called on it alone (None if none does), so the
    error can name it; reward functions are cheap next to a generation step."""
    for i in range(len(completions)):
        try:
            function(
                prompts=prompts[i : i + 1],
                completions=completions[i : i + 1],
                completion_ids=completion_ids[i : i + 1],
                **{k: v[i : i + 1] for k, v in columns.items()},
            )
        except Exception:
            return i
    return None


def _resolve(spec: str, base: Path, where: str) -> Callable:
    module_name, colon, attr = spec.rpartition(":")
    if not colon or not module_name or not attr:
        raise LorakitError(f"{where}: {spec!r} is not 'module:function' (or 'file.py:function')")
    if module_name.endswith(".py"):
        path = Path(module_name) if Path(module_name).is_absolute() else base / module_name
        if not path.is_file():
            raise LorakitError(f"{where}: reward file {path} not found (paths are relative to the config)")
        module = _load_file(path, where)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise LorakitError(f"{where}: cannot import {module_name}: {e}") from None
    if not hasattr(module, attr):
        names = [n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_")]
        raise LorakitError(f"{where}: {module_name} has no function {attr!r} (it has: {', '.join(names) or 'none'})")
    return getattr(module, attr)


def _load_file(path: Path, where: str):
    name = f"lorakit_rewards_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise LorakitError(f"{where}: {path} failed to import: {type(e).__name__}: {_first_line(e)}") from None
    return module


def _unique(name: str, taken: list[str]) -> str:
    if name not in taken:
        return name
    k = 2
    while f"{name}_{k}" in taken:
        k += 1
    return f"{name}_{k}"


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else "(no message)"


def _preview(value: Any, width: int = 60) -> str:
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        value = value[-1].get("content", "")
    text = " ".join(str(value).split())
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def _nanmean(x: torch.Tensor) -> float:
    return float(torch.nanmean(x)) if (~torch.isnan(x)).any() else float("nan")


def _nanstd(x: torch.Tensor) -> float:
    """Standard deviation over non-NaN values with Bessel's correction (TRL's nanstd); NaN below 2 values."""
    x = x[~torch.isnan(x)]
    return float(x.std()) if x.numel() > 1 else float("nan")
