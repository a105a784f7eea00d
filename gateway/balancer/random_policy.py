"""The `random` policy: a weighted dart over the eligible backends.

Owns nothing but the policy object. Because every policy honours `weight`, `random`
draws exactly like `weighted_random` (uniform when the weights are equal, which
is the common case it is chosen for). The module is not called `random.py` so
that it can never shadow the standard library module. It must never keep state
about load: for that use least_request, p2c or ewma.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from gateway.balancer.base import BackendStats
from gateway.balancer.dart import WeightedDart


class RandomPolicy:
    """Probability of a pick = weight / total weight of the eligible backends."""

    __slots__ = ("_dart", "_rng")

    def __init__(self, stats: Sequence[BackendStats], rng: random.Random) -> None:
        self._dart = WeightedDart(stats)
        self._rng = rng

    def pick(self, eligible: Sequence[int], key: bytes | None, now: float) -> int | None:
        if not eligible:
            return None
        return self._dart.draw(eligible, self._rng)
