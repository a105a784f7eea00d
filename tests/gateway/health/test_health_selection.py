"""Eligibility: active up and not ejected; panic mode balances over all below the threshold."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.balancer import Balancer
from gateway.health import FailureKind, OutlierDetector, OutlierSettings, eligible


def test_healthy_are_up_and_not_ejected() -> None:
    up = [True, True, False, True]
    ejected = [False, True, False, False]
    assert eligible(4, up, ejected, 50) == ([0, 3], False)


def test_panic_below_threshold_balances_over_all() -> None:
    up = [True, False, False, False]
    assert eligible(4, up, [False] * 4, 50) == ([0, 1, 2, 3], True)
    assert eligible(4, up, [False] * 4, 25) == ([0], False)  # exactly at threshold: no panic


def test_panic_disabled_at_zero() -> None:
    assert eligible(3, [False] * 3, [False] * 3, 0) == ([], False)


def test_no_backends() -> None:
    assert eligible(0, [], [], 50) == ([], False)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        eligible(2, [True], [False, False], 50)
    with pytest.raises(ValueError):
        eligible(1, [True], [False], 101)


@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=20), st.integers(0, 100))
def test_selection_model(flags: list[tuple[bool, bool]], threshold: int) -> None:
    n = len(flags)
    up = [u for u, _ in flags]
    ej = [e for _, e in flags]
    chosen, panic = eligible(n, up, ej, threshold)
    healthy = [i for i in range(n) if up[i] and not ej[i]]
    if n and len(healthy) / n < threshold / 100:
        assert panic and chosen == list(range(n))
    else:
        assert not panic and chosen == healthy


def test_ejection_and_panic_wired_into_picks() -> None:
    """The integration the worker performs: outlier verdicts steer picks, panic spreads them."""
    balancer = Balancer("round_robin", [(f"b{i}", 1) for i in range(4)], random.Random(0))
    outlier = OutlierDetector(4, OutlierSettings(consecutive_failures=2, max_ejection_percent=100))
    up = [True] * 4
    now = 0.0
    for _ in range(2):
        outlier.record(1, False, FailureKind.CONNECT_ERROR, now)
    chosen, panic = eligible(4, up, outlier.ejected_flags(now), 50)
    assert (chosen, panic) == ([0, 2, 3], False)
    assert {balancer.pick(chosen, None, now) for _ in range(12)} == {0, 2, 3}
    for idx in (2, 3):
        for _ in range(2):
            outlier.record(idx, False, FailureKind.TIMEOUT, now)
    chosen, panic = eligible(4, up, outlier.ejected_flags(now), 50)
    assert panic and {balancer.pick(chosen, None, now) for _ in range(12)} == {0, 1, 2, 3}
    later = outlier.next_deadline(now)
    assert later is not None
    chosen, panic = eligible(4, up, outlier.ejected_flags(later + 30.0), 50)
    assert (chosen, panic) == ([0, 1, 2, 3], False)
