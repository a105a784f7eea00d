"""The `session_affinity` policy: weighted rendezvous (highest random weight) hashing.

Owns the per-backend hash seeds. For a key, every eligible backend scores
`mix64(hash64(key) ^ hash64(backend_id))`; with equal weights the highest score
wins, with unequal weights the score is mapped to u in (0, 1) and the highest
`weight / -ln(u)` wins (Schindelhauer & Schomaker's weighted HRW), so shares follow
weights. Removing a backend moves exactly its own keys; adding one of N moves about
1/N. No table is kept, so there is nothing to rebuild when eligibility changes; a
pick costs one hash per eligible backend. A missing key falls back to a weighted
dart. It must never hash with the builtin `hash()`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from gateway.balancer.base import BackendStats
from gateway.balancer.dart import WeightedDart
from gateway.balancer.key_hash import hash64, mix64

_TWO_POW_52 = float(1 << 52)


class SessionAffinityPolicy:
    """The same key keeps reaching the same backend while that backend stays eligible."""

    __slots__ = ("_dart", "_equal_weights", "_rng", "_seeds", "_weights")

    def __init__(self, stats: Sequence[BackendStats], rng: random.Random) -> None:
        self._rng = rng
        self._dart = WeightedDart(stats)
        self._seeds = [hash64(s.backend_id.encode()) for s in stats]
        self._weights = [s.weight for s in stats]
        self._equal_weights = len({s.weight for s in stats}) <= 1

    def pick(self, eligible: Sequence[int], key: bytes | None, now: float) -> int | None:
        if not eligible:
            return None
        if key is None:
            return self._dart.draw(eligible, self._rng)
        key_hash = hash64(key)
        seeds = self._seeds
        best = eligible[0]
        if self._equal_weights:
            best_score = -1
            for i in eligible:
                score = mix64(key_hash ^ seeds[i])
                if score > best_score:
                    best, best_score = i, score
            return best
        weights = self._weights
        best_weighted = -1.0
        log = math.log
        for i in eligible:
            # The top 52 bits plus a half stay exact in a double: u is strictly in (0, 1).
            unit = ((mix64(key_hash ^ seeds[i]) >> 12) + 0.5) / _TWO_POW_52
            weighted = weights[i] / -log(unit)
            if weighted > best_weighted:
                best, best_weighted = i, weighted
        return best
