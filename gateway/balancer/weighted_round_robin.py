"""The `weighted_round_robin` policy: nginx's "smooth" weighted round robin.

Owns the per-backend current weights. Each pick adds every eligible backend's
weight to its current weight, picks the highest (the lowest index wins a tie),
then subtracts the eligible total from the winner. Over any window of
`total weight` picks each backend is picked exactly `weight` times, and heavy
backends are interleaved with light ones rather than picked in a burst. The
current weights reset to zero whenever the eligible set changes, so a backend
that comes back is not owed (or owing) picks from before. It must never draw
randomness: the sequence is deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from gateway.balancer.base import BackendStats


class WeightedRoundRobinPolicy:
    """nginx smooth WRR over the eligible backends."""

    __slots__ = ("_current", "_key", "_total", "_weights")

    def __init__(self, stats: Sequence[BackendStats], rng: random.Random | None = None) -> None:
        self._weights = [s.weight for s in stats]
        self._current = [0] * len(stats)
        self._key: tuple[int, ...] = ()
        self._total = 0

    def pick(self, eligible: Sequence[int], key: bytes | None, now: float) -> int | None:
        members = tuple(eligible)
        if not members:
            return None
        weights = self._weights
        current = self._current
        if members != self._key:
            for i in range(len(current)):
                current[i] = 0
            self._key = members
            self._total = sum(weights[i] for i in members)
        best = members[0]
        best_current = current[best] + weights[best]
        current[best] = best_current
        for i in members[1:]:
            value = current[i] + weights[i]
            current[i] = value
            if value > best_current:
                best, best_current = i, value
        current[best] = best_current - self._total
        return best
