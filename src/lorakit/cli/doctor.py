"""`lorakit doctor [CONFIG]`: the machine as lorakit sees it, and whether a run of CONFIG fits."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

from lorakit.errors import LorakitError


def doctor_command(
    ctx: typer.Context,
    config: Annotated[
        Optional[Path], typer.Argument(help="run config YAML to check for fit; key=value overrides may follow")
    ] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="named overrides, as for train: low-memory")] = None,
    gpu_memory: Annotated[
        Optional[float],
        typer.Option(
            "--gpu-memory",
            metavar="GIB",
            min=1,
            help="plan for a GPU of this many GiB (e.g. 24) instead of this machine's device",
        ),
    ] = None,
) -> None:
    """Report torch, GPUs, CPU bf16/AMX and optional engines; with CONFIG, will its training fit (before the
    download too, where the model's shapes are known)."""
    from lorakit import doctor

    machine = doctor.inspect_machine()
    for line in machine.lines():
        typer.echo(line)
    if config is None:
        if ctx.args:
            raise LorakitError(f"overrides {ctx.args} need a config: lorakit doctor CONFIG key=value ...")
        return
    from lorakit.config import PRESETS, load_config

    overrides = list(ctx.args)
    if preset is not None:
        if preset not in PRESETS:
            raise LorakitError(f"--preset {preset}: unknown preset; choose from {', '.join(PRESETS)}")
        overrides = PRESETS[preset] + overrides
    cfg = load_config(config, overrides)
    target = doctor.pick_target(cfg, machine, gpu_memory)
    typer.echo(f"lorakit train {config} trains on {target.label}")
    with tempfile.TemporaryDirectory(prefix="lorakit-doctor-") as work:  # shapes of a model not downloaded
        cfg, source = doctor.model_for_estimate(cfg, Path(work))
        typer.echo(source)
        found = doctor.estimates(cfg, target, doctor.Planner())
    for line in doctor.fit_lines(found, target, machine.engines.get("bitsandbytes") is not None):
        typer.echo(line)
