"""The `least_request` policy: lowest active_requests / weight.

Owns nothing but the policy object; the scan and its tie rule (weighted random
among the tied) are in `least_loaded.py`. It must never change a counter.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from gateway.balancer.base import BackendStats
from gateway.balancer.least_loaded import pick_least_loaded


class LeastRequestPolicy:
    """Lowest in-flight request count per unit of weight."""

    __slots__ = ("_rng", "_stats")

    def __init__(self, stats: Sequence[BackendStats], rng: random.Random) -> None:
        self._stats = stats
        self._rng = rng

    def pick(self, eligible: Sequence[int], key: bytes | None, now: float) -> int | None:
        if not eligible:
            return None
        return pick_least_loaded(self._stats, eligible, self._rng, by_requests=True)
