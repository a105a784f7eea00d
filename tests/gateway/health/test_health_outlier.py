"""Passive outlier ejection: threshold, backoff, cap, decay — all with injected time."""

from __future__ import annotations

import pytest

from gateway.health import Ejected, EjectionRefused, FailureKind, OutlierDetector, OutlierSettings

CONNECT, TIMEOUT, E5XX = FailureKind.CONNECT_ERROR, FailureKind.TIMEOUT, FailureKind.HTTP_5XX


def _settings(**kw: float) -> OutlierSettings:
    base = {
        "consecutive_failures": 3,
        "base_ejection_s": 10.0,
        "max_ejection_s": 35.0,
        "max_ejection_percent": 100,
        "ejection_decay_s": 100.0,
    }
    base.update(kw)
    return OutlierSettings(**base)  # type: ignore[arg-type]


def _fail(
    d: OutlierDetector, idx: int, times: int, now: float, kind: FailureKind = CONNECT
) -> object:
    result: object = None
    for _ in range(times):
        result = d.record(idx, False, kind, now)
    return result


def test_consecutive_failures_of_any_kind_eject() -> None:
    d = OutlierDetector(4, _settings())
    assert d.record(0, False, CONNECT, 0.0) is None
    assert d.record(0, False, TIMEOUT, 0.0) is None
    result = d.record(0, False, E5XX, 1.0)
    assert result == Ejected(0, E5XX, 11.0, 1)
    assert d.is_ejected(0, 1.0) and d.is_ejected(0, 10.999)
    assert not d.is_ejected(0, 11.0)
    assert d.ejected_until(0) == 11.0 and d.ejected_until(1) is None
    assert d.failure_totals(0) == {CONNECT: 1, TIMEOUT: 1, E5XX: 1}


def test_success_resets_the_streak() -> None:
    d = OutlierDetector(2, _settings())
    _fail(d, 0, 2, 0.0)
    assert d.record(0, True, None, 0.0) is None
    assert _fail(d, 0, 2, 0.0) is None
    assert not d.is_ejected(0, 0.0)


def test_backoff_doubles_and_caps() -> None:
    d = OutlierDetector(2, _settings())
    now = 0.0
    durations = []
    for _ in range(4):
        result = _fail(d, 0, 3, now)
        assert isinstance(result, Ejected)
        durations.append(result.until - now)
        now = result.until  # back in rotation, fails again at once
    assert durations == [10.0, 20.0, 35.0, 35.0]


def test_ejection_count_decays_after_healthy_periods() -> None:
    d = OutlierDetector(2, _settings())
    first = _fail(d, 0, 3, 0.0)
    assert isinstance(first, Ejected)
    second = _fail(d, 0, 3, first.until)
    assert isinstance(second, Ejected) and second.ejection_count == 2  # until 10 + 20 = 30
    assert d.ejection_count(0, 129.0) == 2  # 99 s healthy: not a full decay period
    assert d.ejection_count(0, 130.0) == 1
    third = _fail(d, 0, 3, 150.0)
    assert isinstance(third, Ejected)
    assert third.ejection_count == 2 and third.until == 170.0  # 20 s, not 35 s
    assert d.ejection_count(0, 170.0 + 250.0) == 0
    fourth = _fail(d, 0, 3, 500.0)
    assert isinstance(fourth, Ejected) and fourth.until == 510.0


def test_failures_while_ejected_only_count_totals() -> None:
    d = OutlierDetector(2, _settings())
    _fail(d, 0, 3, 0.0)
    assert _fail(d, 0, 10, 5.0) is None
    assert d.failure_totals(0)[CONNECT] == 13
    assert d.record(0, False, CONNECT, 11.0) is None  # streak restarted after ejection
    assert not d.is_ejected(0, 11.0)


def test_max_ejection_percent_caps_concurrent_ejections() -> None:
    d = OutlierDetector(10, _settings(max_ejection_percent=20))
    assert d.cap == 2
    assert isinstance(_fail(d, 0, 3, 0.0), Ejected)
    assert isinstance(_fail(d, 1, 3, 0.0), Ejected)
    refused = _fail(d, 2, 3, 1.0)
    assert refused == EjectionRefused(2, CONNECT, 2, 2)
    assert not d.is_ejected(2, 1.0)
    # Once 0 and 1 return, the next failure of 2 (streak still over) ejects it.
    assert isinstance(d.record(2, False, TIMEOUT, 11.0), Ejected)
    assert d.ejected_flags(11.0) == [False] * 2 + [True] + [False] * 7


def test_cap_ejects_at_least_one_and_zero_disables() -> None:
    assert OutlierDetector(3, _settings(max_ejection_percent=10)).cap == 1
    d = OutlierDetector(3, _settings(max_ejection_percent=0))
    assert isinstance(_fail(d, 0, 3, 0.0), EjectionRefused)


def test_next_deadline() -> None:
    d = OutlierDetector(3, _settings())
    assert d.next_deadline(0.0) is None
    _fail(d, 0, 3, 0.0)
    _fail(d, 1, 3, 5.0)
    assert d.next_deadline(6.0) == 10.0
    assert d.next_deadline(10.0) == 15.0
    assert d.next_deadline(15.0) is None


def test_invalid_settings_and_missing_kind() -> None:
    with pytest.raises(ValueError):
        OutlierSettings(base_ejection_s=40.0, max_ejection_s=30.0)
    with pytest.raises(ValueError):
        OutlierSettings(consecutive_failures=0)
    with pytest.raises(ValueError):
        OutlierDetector(1).record(0, False, None, 0.0)
