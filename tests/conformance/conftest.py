import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # families.py

import pytest  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread(lorakit_cache):
    """Tiny models: one thread. On a shared 2-core machine a second thread per 32-wide matmul only waits
    (measured: 7 ms per tiny linear with two threads under load, against microseconds alone)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
