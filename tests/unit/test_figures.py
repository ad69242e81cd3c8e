"""Charts are plain matplotlib Figures: no library function imports pyplot or switches the backend
(which would change a notebook user's own plots), and a Chart shows itself as PNG in IPython."""

import json
import subprocess
import sys
import textwrap

from lorakit.figures import Chart, png_bytes, svg_inline


def test_chart_displays_as_png_and_inline_svg():
    fig = Chart(figsize=(2, 1), dpi=50)
    fig.add_subplot().plot([1, 2, 3])
    assert fig._repr_png_().startswith(b"\x89PNG") and png_bytes(fig, dpi=20).startswith(b"\x89PNG")
    svg = svg_inline(fig)
    assert svg.startswith("<svg") and "<text" not in svg  # text drawn as paths: no font needed


def test_library_charts_leave_matplotlib_global_state_alone(tmp_path):
    """Every chart lorakit draws, in a fresh process: pyplot is never imported, the backend never chosen."""
    (tmp_path / "metrics.jsonl").write_text(
        "\n".join(
            json.dumps(r)
            for r in (
                {"step": 1, "loss": 3.0, "lr": 1e-3},
                {"step": 2, "loss": 2.0, "lr": 1e-3},
                {"step": 2, "eval_loss": 2.2},
            )
        )
    )
    code = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        import matplotlib
        before = matplotlib.rcParams._get("backend")
        from lorakit.training.tracking import write_plots, read_metrics
        from lorakit.data.stats import Inspection, plot_lengths
        from lorakit.eval.report import loss_chart_svg
        from lorakit.eval.tradeoff import load_levers, tradeoff_svg
        run = Path({str(tmp_path)!r})
        assert write_plots(run)
        plot_lengths(Inspection(3, 0, 0, [5, 9, 40], [3, 4, 20], 32, 0), run / "lengths.png")
        assert loss_chart_svg(read_metrics(run / "metrics.jsonl"), 2.5, 2.1).startswith("<svg")
        assert tradeoff_svg(load_levers(), {{"label": "r", "persona": "3/12", "retention": "9/24"}}).startswith("<svg")
        print(json.dumps({{"pyplot": "matplotlib.pyplot" in sys.modules,
                          "same_backend": matplotlib.rcParams._get("backend") == before}}))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"pyplot": False, "same_backend": True}


def test_a_grpo_runs_chart_says_its_eval_curve_is_minus_the_reward():
    """A GRPO run's eval_loss is minus the held-out reward, not nats per token: the chart says so."""
    from lorakit.eval.report import loss_chart_svg

    metrics = [{"step": 1, "loss": 0.1, "eval_loss": -0.2}, {"step": 2, "loss": 0.05, "eval_loss": -0.5}]
    rewarded = loss_chart_svg(metrics, None, None, rewarded=True)
    assert "minus held-out reward" in rewarded and "nats" not in rewarded
    assert "nats / token" in loss_chart_svg(metrics, None, None)
