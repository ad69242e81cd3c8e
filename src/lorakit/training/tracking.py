"""Experiment tracking: a metrics.jsonl file always, plus SwanLab, TensorBoard, W&B or MLflow on request,
and PNG plots of the curves at the end of a run.

A GRPO run also appends tables of sample completions with their rewards to the run's completions.jsonl
(COMPLETIONS_FILE); the tracker forwards each new table to the backends as it logs, each backend in the
form it shows tables in.
"""

from __future__ import annotations

import html
import importlib.util
import json
import math
from pathlib import Path

from lorakit.config import TrackingConfig
from lorakit.errors import LorakitError

DEPENDENCIES = {"swanlab": "install", "tensorboard": "install"}  # installed by default: `make install` restores them
COMPLETIONS_FILE = "completions.jsonl"  # GRPO's sample completions, one {"step", "completions"} per line
PIP_NAMES = {"swanlab": "swanlab[dashboard]", "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def check_backends(cfg: TrackingConfig) -> None:
    """Fail before training if a requested tracker is not installed."""
    for name in cfg.backends:
        if importlib.util.find_spec(name) is None:
            from lorakit.install import install_command

            raise LorakitError(
                f"tracking.backends: {name} is not installed "
                f"({install_command(repr(PIP_NAMES[name]), DEPENDENCIES.get(name))})"
            )


class Tracker:
    """Fans metrics out to every backend; rank 0 only in distributed runs."""

    def __init__(self, cfg: TrackingConfig, run_dir: Path, config: dict, resume_step: int = 0):
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        _truncate_metrics(self.metrics_path, resume_step)
        self._file = open(self.metrics_path, "a", encoding="utf-8")
        self._sinks = []
        name = cfg.experiment or self.run_dir.name
        for backend in cfg.backends:
            self._sinks.append(_OPENERS[backend](cfg, self.run_dir, name, config))
        # Tables already in the file (a resumed run's) went to the backends the first time.
        completions = self.run_dir / COMPLETIONS_FILE
        self._tables_read = completions.stat().st_size if completions.exists() else 0

    def log(self, step: int, metrics: dict) -> None:
        row = {"step": step, **{k: v for k, v in metrics.items() if v is not None}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        for sink in self._sinks:
            sink.log(step, row)
        self._forward_tables()

    def _forward_tables(self) -> None:
        """Send the completion tables appended to completions.jsonl since the last call to every backend."""
        path = self.run_dir / COMPLETIONS_FILE
        if not self._sinks or not path.exists():
            return
        with open(path, "rb") as f:
            f.seek(self._tables_read)
            data = f.read()
        done = data.rfind(b"\n") + 1  # a line still being written waits for the next call
        self._tables_read += done
        for line in data[:done].decode("utf-8").splitlines():
            if line.strip():
                table = json.loads(line)
                for sink in self._sinks:
                    sink.log_table(table["step"], table["completions"])

    def close(self) -> None:
        self._forward_tables()
        self._file.close()
        for sink in self._sinks:
            sink.close()


def read_completions(run_dir: Path, last: int = 3) -> list[dict]:
    """The last `last` completion tables of a GRPO run ({"step", "completions": rows}); [] without any."""
    path = Path(run_dir) / COMPLETIONS_FILE
    if not path.exists():
        return []
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [json.loads(ln) for ln in lines[-last:]] if last > 0 else []


def table_columns(rows: list[dict]) -> list[str]:
    """The columns of a completions table: prompt, completion, then the rewards in their order."""
    names = list(rows[0]) if rows else []
    return ["prompt", "completion"] + [n for n in names if n not in ("prompt", "completion")]


def markdown_table(rows: list[dict]) -> str:
    """A completions table as Markdown (TensorBoard's text plugin renders it); HTML, pipes and newlines escaped."""
    columns = table_columns(rows)

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        text = "" if value is None else str(value)
        # TensorBoard sanitises HTML in Markdown: the completions' own tags (<answer>) must be entities
        text = html.escape(text, quote=False).replace("\\", "\\\\").replace("|", "\\|")
        return text.replace("\n", "<br>")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _truncate_metrics(path: Path, keep_until: int) -> None:
    """On resume, drop rows logged after the checkpoint so the file reads as one uninterrupted run."""
    if not path.exists():
        return
    if keep_until <= 0:
        path.unlink()
        return
    rows = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    kept = [ln for ln in rows if json.loads(ln).get("step", 0) <= keep_until]
    from lorakit.atomic import write_text

    write_text(path, "".join(ln + "\n" for ln in kept))


class _SwanLab:
    def __init__(self, cfg: TrackingConfig, run_dir: Path, name: str, config: dict):
        import swanlab

        # swanlab.init must run before anything logs (transformers' integration fails with "No active
        # Run" otherwise); local mode needs no login and no network.
        self.run = swanlab.init(
            project=cfg.project,
            experiment_name=name,
            config=config,
            mode=cfg.swanlab_mode,
            logdir=str(run_dir / "swanlog"),
        )
        self._swanlab = swanlab

    def log(self, step: int, row: dict) -> None:
        self._swanlab.log({k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}, step=step)

    def log_table(self, step: int, rows: list[dict]) -> None:
        # SwanLab's table chart (an ECharts table, what TRL logs its completions as).
        columns = table_columns(rows)
        table = self._swanlab.echarts.Table().add(columns, [[_cell(r.get(c)) for c in columns] for r in rows])
        self._swanlab.log({"completions": table}, step=step)

    def close(self) -> None:
        self._swanlab.finish()


class _TensorBoard:
    def __init__(self, cfg: TrackingConfig, run_dir: Path, name: str, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```")

    def log(self, step: int, row: dict) -> None:
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)):
                self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def log_table(self, step: int, rows: list[dict]) -> None:
        self.writer.add_text("completions", markdown_table(rows), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, cfg: TrackingConfig, run_dir: Path, name: str, config: dict):
        import wandb

        self.run = wandb.init(project=cfg.project, name=name, config=config, dir=str(run_dir))

    def log(self, step: int, row: dict) -> None:
        self.run.log({k: v for k, v in row.items() if k != "step"}, step=step)

    def log_table(self, step: int, rows: list[dict]) -> None:
        import wandb

        columns = table_columns(rows)
        table = wandb.Table(columns=columns, data=[[_cell(r.get(c)) for c in columns] for r in rows])
        self.run.log({"completions": table}, step=step)

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    def __init__(self, cfg: TrackingConfig, run_dir: Path, name: str, config: dict):
        import mlflow

        self.mlflow = mlflow
        mlflow.set_experiment(cfg.project)
        mlflow.start_run(run_name=name)
        mlflow.log_params({k: str(v)[:250] for k, v in _flatten(config).items()})

    def log(self, step: int, row: dict) -> None:
        self.mlflow.log_metrics(
            {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}, step=step
        )

    def log_table(self, step: int, rows: list[dict]) -> None:
        columns = table_columns(rows)
        self.mlflow.log_table(
            {c: [_cell(r.get(c)) for r in rows] for c in columns}, artifact_file=f"completions/step_{step:06d}.json"
        )

    def close(self) -> None:
        self.mlflow.end_run()


def _cell(value):
    """A table cell: numbers and text as they are, None (a reward that did not apply) as an empty cell."""
    return "" if value is None else value


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


_OPENERS = {"swanlab": _SwanLab, "tensorboard": _TensorBoard, "wandb": _WandB, "mlflow": _MLflow}

PLOTS = [
    ("loss", ["loss", "eval_loss"], "loss"),
    ("learning_rate", ["lr"], "learning rate"),
    ("grad_norm", ["grad_norm"], "gradient norm"),
    ("throughput", ["tokens_per_s"], "real tokens / s"),
    ("reward", ["reward", "eval_reward"], "reward (GRPO: training samples, greedy held-out)"),
]


def read_metrics(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    return [json.loads(ln) for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]


def write_plots(run_dir: Path) -> list[Path]:
    """One PNG per curve in RUN_DIR/plots from metrics.jsonl; returns the files written."""
    from lorakit.figures import Chart

    rows = read_metrics(Path(run_dir) / "metrics.jsonl")
    out_dir = Path(run_dir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, keys, title in PLOTS:
        series = {
            k: [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
            for k in keys
        }
        if not any(series.values()):
            continue
        fig = Chart(figsize=(6, 3.5), dpi=100)
        ax = fig.add_subplot()
        for k, pts in series.items():
            if pts:
                ax.plot(*zip(*pts), marker="o" if len(pts) < 30 else None, markersize=3, label=k)
        ax.set_xlabel("optimizer step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if len([p for p in series.values() if p]) > 1:
            ax.legend()
        fig.tight_layout()
        path = out_dir / f"{fname}.png"
        fig.savefig(path)
        written.append(path)
    return written
