"""Every chart lorakit draws: a plain matplotlib `Figure`, never pyplot, never `matplotlib.use`.

pyplot keeps open figures in a process-wide registry and `matplotlib.use` switches the backend for
the whole process, so a library that used them would change what a notebook user's own plots do. A
`Figure` made directly is an ordinary object: saving it picks the right canvas for the format (Agg
for PNG), and it is freed like any other object. In IPython a `Chart` shows itself as a PNG through
the `_repr_png_` display protocol, so `run.plot()` renders inline whether or not the kernel turned
matplotlib's inline backend on.

Imported inside the functions that draw, so `import lorakit` does not load matplotlib.
"""

from __future__ import annotations

import io

import matplotlib
from matplotlib.figure import Figure

__all__ = ["Chart", "png_bytes", "svg_inline"]


class Chart(Figure):
    """A Figure that IPython displays as a PNG (and that saves like any Figure)."""

    def _repr_png_(self) -> bytes:
        return png_bytes(self)


def png_bytes(fig: Figure, **savefig) -> bytes:
    """The figure as PNG bytes (`savefig` options such as dpi or bbox_inches pass through)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig)
    return buf.getvalue()


def svg_inline(fig: Figure) -> str:
    """The figure (laid out tight) as an inline <svg> element; text as paths, so no font is needed to read it."""
    fig.tight_layout()
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path"}):
        fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    return svg[svg.find("<svg") :]
