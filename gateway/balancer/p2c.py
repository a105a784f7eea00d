"""The `p2c` policy: power of two choices, weighted.

Owns nothing but the policy object. Each pick draws two distinct backends, each
draw weighted (the second among the rest), and keeps the one with the lower
active_requests / weight; a tie keeps the first draw. With one eligible backend
that backend is returned. It must never change a counter.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from gateway.balancer.base import BackendStats
from gateway.balancer.dart import WeightedDart


class P2CPolicy:
    """Two weighted random candidates; the less loaded per unit of weight wins."""

    __slots__ = ("_dart", "_rng", "_stats")

    def __init__(self, stats: Sequence[BackendStats], rng: random.Random) -> None:
        self._stats = stats
        self._rng = rng
        self._dart = WeightedDart(stats)

    def pick(self, eligible: Sequence[int], key: bytes | None, now: float) -> int | None:
        if not eligible:
            return None
        if len(eligible) == 1:
            return eligible[0]
        a, b = self._dart.draw_pair(eligible, self._rng)
        sa = self._stats[a]
        sb = self._stats[b]
        # a/wa <= b/wb  <=>  a*wb <= b*wa (weights are positive): exact integer compare.
        if sa.active_requests * sb.weight <= sb.active_requests * sa.weight:
            return a
        return b
