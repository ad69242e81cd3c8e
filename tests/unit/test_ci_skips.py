"""In CI a skipped test is a failure (tests/conftest.py), so a missing tool cannot pass as green."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_probe():
    if os.environ.get("LORAKIT_SKIP_PROBE"):  # set only by the test below, in its own pytest
        pytest.skip("probe skip")


def test_a_skip_fails_in_ci():
    here = Path(__file__)
    env = {**os.environ, "CI": "true", "LORAKIT_SKIP_PROBE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{here}::test_probe"],
        capture_output=True,
        text=True,
        env=env,
        cwd=here.parents[2],
        timeout=300,
    )
    assert done.returncode == 1 and "skipped in CI (Skipped: probe skip)" in done.stdout, done.stdout
