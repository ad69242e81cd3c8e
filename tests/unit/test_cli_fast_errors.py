"""A wrong path is a one-line error before torch, transformers or peft are imported (seconds each)."""

import subprocess
import sys

import pytest

PROBE = """
import sys
from lorakit.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    heavy = sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules)
    print("exit", e.code, "imported", ",".join(heavy) or "none")
"""


@pytest.mark.parametrize(
    "args",
    [
        ["train", "{tmp}/missing.yaml"],
        ["merge", "{tmp}/no-run", "--out", "{tmp}/merged"],
        ["eval", "{tmp}/no-run"],
        ["chat", "--adapter", "{tmp}/no-run", "--prompt", "hi"],
        ["serve", "--model", "{tmp}/no-model"],
        ["serve", "--lora-modules", "a={tmp}/no-run"],
    ],
)
def test_wrong_paths_fail_before_the_heavy_imports(tmp_path, args):
    argv = [a.format(tmp=tmp_path) for a in args]
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    assert "exit 2 imported none" in done.stdout, done.stdout + done.stderr
    assert done.stderr.strip().startswith("error: ") and len(done.stderr.strip().splitlines()) == 1, done.stderr
