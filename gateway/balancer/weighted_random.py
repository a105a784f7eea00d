"""The `weighted_random` policy: a dart in [0, total weight) walked over cumulative weights.

Owns nothing but the policy object; the cumulative table lives in `dart.py` and
is rebuilt only when the eligible set changes. It must never look at load.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from gateway.balancer.base import BackendStats
from gateway.balancer.dart import WeightedDart


class WeightedRandomPolicy:
    """Probability of a pick = weight / total weight of the eligible backends."""

    __slots__ = ("_dart", "_rng")

    def __init__(self, stats: Sequence[BackendStats], rng: random.Random) -> None:
        self._dart = WeightedDart(stats)
        self._rng = rng

    def pick(self, eligible: Sequence[int], key: bytes | None, now: float) -> int | None:
        if not eligible:
            return None
        return self._dart.draw(eligible, self._rng)
