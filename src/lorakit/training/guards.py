"""Guards around the training loop: a diverged step stops the run before it poisons the weights, and
SIGINT or SIGTERM (Ctrl-C, `kill`, a scheduler's preemption) stop it after a checkpoint."""

from __future__ import annotations

import math
import signal
import sys

from lorakit.errors import LorakitError


class Diverged(LorakitError):
    """A non-finite loss or gradient; the run is recorded as diverged, never as completed."""

    def __init__(self, message: str, step: int, last_good: str | None):
        super().__init__(message, exit_code=1)
        self.step = step
        self.last_good = last_good


def check_finite(step: int, loss: float, grad_norm: float, last_good: str | None) -> None:
    """Raise Diverged when this step's loss or gradient norm is NaN or infinite. Called before the
    optimizer step, so the weights (and every saved checkpoint) stay as they were after the last good step."""
    bad = [
        f"{name} is {value}"
        for name, value in (("loss", loss), ("gradient norm", grad_norm))
        if not math.isfinite(value)
    ]
    if not bad:
        return
    where = f"last good checkpoint: {last_good}" if last_good else "no checkpoint was saved before it"
    raise Diverged(
        f"training diverged at step {step}: {' and '.join(bad)}; stopped without updating the "
        f"weights ({where}); lower train.lr or check the data, then continue with --resume "
        f"--resume-anyway or start over with --overwrite",
        step,
        last_good,
    )


class StopFlag:
    """The first SIGINT or SIGTERM asks the loop to checkpoint and stop after the current step; a second
    one aborts at once. `exit_code` follows the shell's convention: 128 + the signal number."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self.exit_code = 130
        self._old: dict = {}
        for sig in self.SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. called from a server): signals stay default
                pass

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.exit_code = 128 + signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\n{name}: stopping after this step and saving a checkpoint (again to abort)", file=sys.stderr)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}
