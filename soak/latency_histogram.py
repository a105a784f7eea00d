"""Latency histograms with log-spaced buckets: what a load client records per second and
what the runner merges into percentiles.

Pure: no clock, no I/O. A bucket index stands for the latencies up to its upper bound;
bounds grow by `RATIO` from `FIRST_BOUND_S`, so a percentile is exact to within 20 %.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

FIRST_BOUND_S = 0.00005  # 50 µs
RATIO = 1.2
LAST_INDEX = 90  # 50 µs x 1.2^90 ≈ 650 s: anything slower lands here


def bucket_of(latency_s: float) -> int:
    if latency_s <= FIRST_BOUND_S:
        return 0
    return min(LAST_INDEX, math.ceil(math.log(latency_s / FIRST_BOUND_S, RATIO) - 1e-9))


def upper_bound_s(index: int) -> float:
    return float(FIRST_BOUND_S * RATIO**index)


def merge(histograms: Iterable[Mapping[int, int]]) -> dict[int, int]:
    total: dict[int, int] = {}
    for h in histograms:
        for idx, n in h.items():
            total[int(idx)] = total.get(int(idx), 0) + n
    return total


def percentile_s(histogram: Mapping[int, int], q: float) -> float | None:
    """The upper bound of the bucket holding the q-quantile (0 < q <= 1); None when empty."""
    count = sum(histogram.values())
    if count == 0:
        return None
    rank = max(1, math.ceil(q * count))
    seen = 0
    for idx in sorted(histogram):
        seen += histogram[idx]
        if seen >= rank:
            return upper_bound_s(idx)
    return upper_bound_s(max(histogram))
