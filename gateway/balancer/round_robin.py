"""The `round_robin` policy: rotate over the eligible backends.

Owns a cursor (the last backend picked). With equal weights each pick is the
next eligible backend after the cursor in index order, wrapping around, so a
backend leaving or rejoining the eligible set does not restart the rotation. The
cursor starts at a random backend (drawn once from the injected rng) so that
workers do not all send their first request to backend 0.

With unequal weights, `round_robin` behaves exactly as smooth weighted round
robin (`weighted_round_robin.py`): rotation that interleaves heavy backends with
light ones, each backend picked `weight` times per `total weight` picks. It must
never draw randomness after construction.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence

from gateway.balancer.base import BackendStats
from gateway.balancer.weighted_round_robin import WeightedRoundRobinPolicy


class RoundRobinPolicy:
    """Plain rotation when weights are equal; smooth WRR when they are not."""

    __slots__ = ("_cursor", "_smooth")

    def __init__(self, stats: Sequence[BackendStats], rng: random.Random) -> None:
        weights = {s.weight for s in stats}
        self._smooth = WeightedRoundRobinPolicy(stats) if len(weights) > 1 else None
        self._cursor = rng.randrange(len(stats)) - 1 if stats else -1

    def pick(self, eligible: Sequence[int], key: bytes | None, now: float) -> int | None:
        if not eligible:
            return None
        if self._smooth is not None:
            return self._smooth.pick(eligible, key, now)
        # `eligible` is ascending (the module contract), so the next index after the
        # cursor is found by bisection; past the end wraps to the first.
        pos = bisect_right(eligible, self._cursor)
        chosen = eligible[pos] if pos < len(eligible) else eligible[0]
        self._cursor = chosen
        return chosen
