"""The verdict rule on synthetic series: flat and noisy-flat stay BOUNDED, a slow leak is
DRIFT, a step that settles is BOUNDED, a falling throughput is DRIFT, spikes from restarts
do not tilt the slope, and too few samples is INCONCLUSIVE (which does not pass)."""

from __future__ import annotations

import random

from soak.verdict import BOUNDED, DRIFT, INCONCLUSIVE, MIB, RULES, judge, theil_sen_slope

STEP_S = 5.0
N = 720  # an hour at one sample every 5 s


def _series(f, n: int = N) -> list[tuple[float, float]]:
    return [(i * STEP_S, f(i)) for i in range(n)]


def test_flat_rss_is_bounded() -> None:
    v = judge("rss", _series(lambda i: 120 * MIB), RULES["bytes"], 300)
    assert v.verdict == BOUNDED and v.passed
    assert abs(v.slope_per_h) < 1e-6


def test_noisy_flat_rss_is_bounded() -> None:
    rng = random.Random(3)
    v = judge("rss", _series(lambda i: 120 * MIB + rng.gauss(0, 8 * MIB)), RULES["bytes"], 300)
    assert v.verdict == BOUNDED, v


def test_slow_leak_is_drift() -> None:
    """30 MiB per hour on 120 MiB under 4 MiB of noise: small per sample, plain over the run."""
    rng = random.Random(4)
    leak_per_sample = 30 * MIB / N
    v = judge(
        "rss",
        _series(lambda i: 120 * MIB + i * leak_per_sample + rng.gauss(0, 4 * MIB)),
        RULES["bytes"],
        300,
    )
    assert v.verdict == DRIFT and not v.passed, v
    assert 20 * MIB < v.growth < 40 * MIB


def test_fd_leak_of_one_per_minute_is_drift() -> None:
    rng = random.Random(5)
    v = judge(
        "fds", _series(lambda i: 130 + i * STEP_S / 60 + rng.randint(-10, 10)), RULES["fds"], 300
    )
    assert v.verdict == DRIFT, v


def test_step_that_settles_is_bounded() -> None:
    """A pool that fills once (a level change 40 % into the run) is not a leak: the
    whole-window trend passes the threshold, the second half is flat."""
    rng = random.Random(6)
    v = judge(
        "fds",
        _series(lambda i: (100 if i < N * 0.4 else 160) + rng.randint(-3, 3)),
        RULES["fds"],
        0,
    )
    assert v.verdict == BOUNDED, v
    assert v.growth > v.threshold and v.note == "moved, then settled"


def test_growth_still_going_at_the_end_is_drift_even_after_a_flat_start() -> None:
    rng = random.Random(7)
    v = judge(
        "fds",
        _series(lambda i: 100 + max(0, i - N // 3) * 0.25 + rng.randint(-3, 3)),
        RULES["fds"],
        0,
    )
    assert v.verdict == DRIFT, v


def test_restart_spikes_do_not_tilt_the_slope() -> None:
    """Every 12th sample doubles (a reload's second generation): still BOUNDED."""
    v = judge(
        "rss",
        _series(lambda i: (250 if i % 12 in (0, 1) else 125) * MIB),
        RULES["bytes"],
        300,
    )
    assert v.verdict == BOUNDED, v


def test_falling_throughput_is_drift_and_steady_throughput_is_not() -> None:
    rng = random.Random(8)
    falling = judge("rps", _series(lambda i: 40 - 30 * i / N + rng.gauss(0, 2)), RULES["rps"], 300)
    steady = judge("rps", _series(lambda i: 40 + rng.gauss(0, 6)), RULES["rps"], 300)
    assert falling.verdict == DRIFT, falling
    assert steady.verdict == BOUNDED, steady


def test_too_few_steady_samples_is_inconclusive_and_does_not_pass() -> None:
    v = judge("rss", _series(lambda i: float(i), n=20), RULES["bytes"], 15 * STEP_S)
    assert v.verdict == INCONCLUSIVE and not v.passed


def test_theil_sen_ignores_outliers_that_least_squares_would_follow() -> None:
    points = [(float(i), 2.0 * i) for i in range(40)]
    points[35] = (35.0, 10_000.0)
    points[36] = (36.0, 10_000.0)
    assert abs(theil_sen_slope(points) - 2.0) < 1e-9


def test_long_series_are_binned_and_still_fit() -> None:
    points = [(float(i), 3.0 * i) for i in range(20_000)]
    assert abs(theil_sen_slope(points) - 3.0) < 0.01
