"""Weighted random draws ("darts") over an eligible subset of backends.

Owns the cumulative-weight table for the current eligible set (rebuilt only when
that set changes) and the draws built on it: one weighted draw, two distinct
weighted draws (for p2c), and a weighted choice among a few tied candidates. It
must never own an RNG or any notion of load: the caller passes `rng`.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence

from gateway.balancer.base import BackendStats


class WeightedDart:
    """Weighted random draws among `eligible`, with the table cached per eligible set."""

    __slots__ = ("_cumulative", "_key", "_members", "_stats", "_total", "_uniform")

    def __init__(self, stats: Sequence[BackendStats]) -> None:
        self._stats = stats
        self._key: tuple[int, ...] = ()
        self._members: tuple[int, ...] = ()
        self._cumulative: list[int] = []
        self._total = 0
        self._uniform = True

    def _refresh(self, eligible: Sequence[int]) -> None:
        key = tuple(eligible)
        if key == self._key:
            return
        cumulative: list[int] = []
        total = 0
        for i in key:
            total += self._stats[i].weight
            cumulative.append(total)
        self._key = key
        self._members = key
        self._cumulative = cumulative
        self._total = total
        first = self._stats[key[0]].weight if key else 0
        self._uniform = all(self._stats[i].weight == first for i in key)

    def draw(self, eligible: Sequence[int], rng: random.Random) -> int:
        """One backend, with probability weight / total eligible weight. `eligible` non-empty."""
        self._refresh(eligible)
        members = self._members
        if self._uniform:
            return members[rng.randrange(len(members))]
        return members[bisect_right(self._cumulative, rng.randrange(self._total))]

    def draw_pair(self, eligible: Sequence[int], rng: random.Random) -> tuple[int, int]:
        """Two distinct backends: the first weighted, the second weighted among the rest.

        `eligible` must have at least two members.
        """
        self._refresh(eligible)
        members = self._members
        if self._uniform:
            n = len(members)
            a = rng.randrange(n)
            b = rng.randrange(n - 1)
            if b >= a:
                b += 1
            return members[a], members[b]
        cumulative = self._cumulative
        pos_a = bisect_right(cumulative, rng.randrange(self._total))
        weight_a = self._stats[members[pos_a]].weight
        start_a = cumulative[pos_a] - weight_a
        # A dart over the total minus a's span, stepped over that span, never lands on a.
        dart = rng.randrange(self._total - weight_a)
        if dart >= start_a:
            dart += weight_a
        return members[pos_a], members[bisect_right(cumulative, dart)]


def weighted_choice(
    stats: Sequence[BackendStats], candidates: Sequence[int], rng: random.Random
) -> int:
    """One of a few `candidates` (non-empty) with probability proportional to weight."""
    if len(candidates) == 1:
        return candidates[0]
    total = 0
    for i in candidates:
        total += stats[i].weight
    dart = rng.randrange(total)
    for i in candidates:
        dart -= stats[i].weight
        if dart < 0:
            return i
    return candidates[-1]  # unreachable: the darts sum to `total`
