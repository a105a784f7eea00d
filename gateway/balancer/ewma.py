"""The `ewma` policy: lowest latency-EWMA x (in-flight + 1) / weight.

Owns the pick rule only; the average itself is kept by `latency_ewma.py` and fed
by the Balancer when a request finishes. Rules, in order:

1. Probe first: an eligible backend never measured and with no request in flight
   is picked (weighted random among such backends), so every backend gets a
   measurement before cost comparisons start, one probe at a time.
2. Otherwise every eligible backend scores
   `latency(now) * (active_requests + 1) / weight`, where `latency(now)` is the
   time-decayed average; a backend whose first probe is still in flight scores with
   the highest latency measured among the eligible (1.0 s if none is measured).
3. The lowest score wins; exact ties are broken by a weighted random draw.

It must never change a counter or the average.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from gateway.balancer.base import BackendStats
from gateway.balancer.dart import weighted_choice
from gateway.balancer.latency_ewma import decayed_latency

UNMEASURED_FALLBACK_S = 1.0


class EwmaPolicy:
    """Latency-aware least-request: prefers fast, idle, heavy backends."""

    __slots__ = ("_decay_s", "_rng", "_stats")

    def __init__(
        self, stats: Sequence[BackendStats], rng: random.Random, *, decay_s: float = 10.0
    ) -> None:
        if not decay_s > 0.0:
            raise ValueError(f"ewma decay must be > 0 seconds, got {decay_s!r}")
        self._stats = stats
        self._rng = rng
        self._decay_s = decay_s

    @property
    def decay_s(self) -> float:
        return self._decay_s

    def pick(self, eligible: Sequence[int], key: bytes | None, now: float) -> int | None:
        if not eligible:
            return None
        stats = self._stats
        decay_s = self._decay_s
        latencies: list[float | None] = []
        probes: list[int] = []
        worst = 0.0
        for i in eligible:
            s = stats[i]
            latency = decayed_latency(s, now, decay_s)
            latencies.append(latency)
            if latency is None:
                if s.active_requests == 0:
                    probes.append(i)
            elif latency > worst:
                worst = latency
        if probes:
            return weighted_choice(stats, probes, self._rng)
        stand_in = worst if worst > 0.0 else UNMEASURED_FALLBACK_S
        best_score = float("inf")
        tied: list[int] = []
        for i, latency in zip(eligible, latencies, strict=True):
            s = stats[i]
            score = (stand_in if latency is None else latency) * (s.active_requests + 1) / s.weight
            if score < best_score:
                best_score = score
                tied = [i]
            elif score == best_score:
                tied.append(i)
        return weighted_choice(stats, tied, self._rng)
