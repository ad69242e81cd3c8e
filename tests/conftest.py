"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def lorakit_cache() -> Path:
    """One model cache for the whole test session, kept between runs (gitignored) so built-ins build once."""
    import torch

    # Two threads in one process; one per worker when pytest-xdist runs workers side by side (two
    # CPU-heavy processes with two threads each stall each other on a 2-core machine). The CLI
    # subprocesses the tests start inherit the same count through OMP_NUM_THREADS.
    threads = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    cache = REPO / "tests" / ".cache"
    cache.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("LORAKIT_CACHE")
    os.environ["LORAKIT_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("LORAKIT_CACHE", None)
    else:
        os.environ["LORAKIT_CACHE"] = old


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (CI=true) a skipped test is a failure: a test that cannot run there proves nothing, so
    .ci/run installs what the tests need (Chromium) instead of letting them skip."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and _in_ci() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI ({reason}); CI runs every test: install what it needs in .ci/run"


# The modules that take longest (pytest --durations, docs/benchmarks.md "Test suite"), longest first.
# `make test` runs two pytest-xdist workers, each taking whole modules (--dist loadfile) in collection
# order (--no-loadscope-reorder: xdist would otherwise order modules by their number of tests), two at
# first, then one more whenever a worker is done: starting with these keeps the last minutes from running
# on one worker while the other idles.
LONGEST_FIRST = (
    "integration/test_train_cli.py",
    "integration/test_demo_cli.py",
    "integration/test_faults.py",
    "integration/test_train_dpo.py",
    "unit/export/test_export_roundtrip.py",
    "integration/test_eval_tasks.py",
    "integration/test_eval_cli.py",
    "integration/test_serve_load.py",
    "integration/test_export_cli.py",
    "integration/test_merge_cli.py",
    "integration/test_serve.py",
    "integration/test_data_cli.py",
    "integration/test_eval_chinese.py",
    "integration/test_notebook.py",
    "unit/export/test_export_quality.py",
    "integration/test_eval_tool_calls_cli.py",
)


def pytest_collection_modifyitems(config, items):
    def rank(path: Path) -> int:
        rel = path.relative_to(REPO / "tests").as_posix()
        return LONGEST_FIRST.index(rel) if rel in LONGEST_FIRST else len(LONGEST_FIRST)

    first_seen: dict[Path, int] = {}
    for item in items:
        first_seen.setdefault(item.path, len(first_seen))
    # a stable sort on (rank, module's first position): each module stays whole and in its own order
    items.sort(key=lambda item: (rank(item.path), first_seen[item.path]))
