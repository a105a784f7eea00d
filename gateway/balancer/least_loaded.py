"""The lowest load-per-weight scan shared by `least_connections` and `least_request`.

Owns `pick_least_loaded`: the eligible backend with the lowest
`active / weight` ratio. Ties (including the all-idle start) are broken by a
weighted random draw among the tied backends, never by lowest index: with
lowest-index ties, strictly sequential traffic (each request ending before the
next starts) would all go to one backend and weights would be ignored. It must
never change a counter: the Balancer owns them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from gateway.balancer.base import BackendStats
from gateway.balancer.dart import weighted_choice


def pick_least_loaded(
    stats: Sequence[BackendStats],
    eligible: Sequence[int],
    rng: random.Random,
    *,
    by_requests: bool,
) -> int:
    """The eligible backend (non-empty) with the lowest active/weight, ties weighted-random."""
    best_ratio = float("inf")
    tied: list[int] = []
    for i in eligible:
        s = stats[i]
        load = s.active_requests if by_requests else s.active_connections
        # Float division is exact enough: equal rationals divide to the same double.
        ratio = load / s.weight
        if ratio < best_ratio:
            best_ratio = ratio
            tied = [i]
        elif ratio == best_ratio:
            tied.append(i)
    return weighted_choice(stats, tied, rng)
