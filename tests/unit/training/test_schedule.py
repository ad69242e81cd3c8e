"""The learning-rate schedule: linear warmup, then linear, cosine or constant."""

import math

import pytest

from lorakit.training.loop import schedule


def test_warmup_rises_linearly_to_one():
    f = schedule("linear", total=100, warmup_ratio=0.1)
    assert [f(s) for s in (0, 4, 9)] == [pytest.approx(0.1), pytest.approx(0.5), pytest.approx(1.0)]


@pytest.mark.parametrize("kind, mid, end", [("linear", 0.5, 0.0), ("cosine", 0.5, 0.0), ("constant", 1.0, 1.0)])
def test_decay_after_warmup(kind, mid, end):
    f = schedule(kind, total=110, warmup_ratio=10 / 110)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(mid)
    assert f(110) == pytest.approx(end)


def test_cosine_is_half_a_cosine_and_never_rises_past_the_end():
    f = schedule("cosine", total=100, warmup_ratio=0.0)
    assert f(25) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert f(150) == pytest.approx(0.0)  # past the last step (a resumed run with more steps) stays at 0


def test_no_warmup_starts_at_full_rate():
    assert schedule("linear", total=10, warmup_ratio=0.0)(0) == pytest.approx(1.0)
