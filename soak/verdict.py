"""BOUNDED or DRIFT for one time series, from a robust slope over the steady part of a run.

Pure: points in, a `Verdict` out; no clock, no I/O. The rule, stated once so the report can
print it: take the samples after `steady_from_s`; fewer than `MIN_SAMPLES` is INCONCLUSIVE.
Fit a Theil-Sen slope (the median of every pairwise slope, so a minority of spikes from
reloads or worker restarts cannot tilt it) over the whole steady window and again over its
second half. The series DRIFTs when the whole-window slope, extended over the window, moves
it by more than the threshold in the bad direction AND the second-half slope, extended over
the same span, still moves it by more than half the threshold: a level that rose once and
settled (a pool filling up) is BOUNDED; growth still going on at the end is DRIFT. The
threshold is max(`rel` x the steady median, `floor`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

BOUNDED = "BOUNDED"
DRIFT = "DRIFT"
INCONCLUSIVE = "INCONCLUSIVE"
MIN_SAMPLES = 8
MAX_FIT_POINTS = 300  # longer series are binned to this many medians before the O(n²) fit

MIB = 1024 * 1024


@dataclass(frozen=True)
class Rule:
    """How a series is judged. direction "grow": rising is bad (memory, fds, latency);
    "fall": falling is bad (throughput)."""

    direction: str
    rel: float
    floor: float
    unit: str

    def describe(self) -> str:
        word = "growth" if self.direction == "grow" else "decline"
        floor = (
            f"{self.floor / MIB:g} MiB" if self.unit == "bytes" else f"{self.floor:g} {self.unit}"
        )
        return f"{word} > max({self.rel:.0%} of median, {floor})"


RULES: dict[str, Rule] = {
    "bytes": Rule("grow", 0.10, 16 * MIB, "bytes"),
    "fds": Rule("grow", 0.10, 8, "fds"),
    "threads": Rule("grow", 0.10, 2, "threads"),
    "connections": Rule("grow", 0.25, 16, "connections"),
    "rps": Rule("fall", 0.50, 1.0, "req/s"),
    "latency": Rule("grow", 1.00, 0.050, "s"),
}


@dataclass(frozen=True)
class Verdict:
    series: str
    verdict: str
    rule: str
    n: int
    median: float
    slope_per_h: float
    growth: float
    tail_growth: float
    threshold: float
    unit: str
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.verdict == BOUNDED

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def _binned(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_FIT_POINTS:
        return list(points)
    size = len(points) / MAX_FIT_POINTS
    out = []
    for i in range(MAX_FIT_POINTS):
        chunk = points[int(i * size) : max(int((i + 1) * size), int(i * size) + 1)]
        out.append((statistics.median(t for t, _ in chunk), statistics.median(v for _, v in chunk)))
    return out


def theil_sen_slope(points: Sequence[tuple[float, float]]) -> float:
    """Median of the slopes between every pair of points with distinct times."""
    pts = _binned(points)
    slopes = [
        (v2 - v1) / (t2 - t1)
        for i, (t1, v1) in enumerate(pts)
        for t2, v2 in pts[i + 1 :]
        if t2 != t1
    ]
    return statistics.median(slopes) if slopes else 0.0


def judge(
    series: str, points: Sequence[tuple[float, float]], rule: Rule, steady_from_s: float
) -> Verdict:
    steady = sorted(
        (t, v) for t, v in points if t >= steady_from_s and v is not None and math.isfinite(v)
    )
    n = len(steady)
    if n < MIN_SAMPLES:
        return Verdict(
            series, INCONCLUSIVE, rule.describe(), n, math.nan, 0.0, 0.0, 0.0, math.nan, rule.unit,
            f"only {n} steady samples (need {MIN_SAMPLES})",
        )  # fmt: skip
    median = statistics.median(v for _, v in steady)
    span = steady[-1][0] - steady[0][0]
    slope = theil_sen_slope(steady)
    mid = steady[0][0] + span / 2
    tail = [p for p in steady if p[0] >= mid]
    tail_slope = theil_sen_slope(tail) if len(tail) >= 2 else 0.0
    sign = 1.0 if rule.direction == "grow" else -1.0
    growth, tail_growth = sign * slope * span, sign * tail_slope * span
    threshold = float(max(rule.rel * abs(median), rule.floor))
    drift = growth > threshold and tail_growth > threshold / 2
    note = ""
    if growth > threshold and not drift:
        note = "moved, then settled"
    return Verdict(
        series,
        DRIFT if drift else BOUNDED,
        rule.describe(),
        n,
        median,
        slope * 3600,
        growth,
        tail_growth,
        threshold,
        rule.unit,
        note,
    )
