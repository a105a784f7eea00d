"""The `ring_hash` policy: a consistent-hash ring with virtual nodes per unit of weight.

Owns the ring for an eligible set. Each backend places `vnodes_per_weight x weight`
points on a 64-bit ring, point k being `hash64(b"<backend_id>#<k>")`, so a
backend's points do not depend on list order or on the other backends. When the
total would exceed `max_ring_size`, every backend's count is scaled down in the
same proportion (at least one point each). A key hashed with `key_hash.hash64`
goes to the first point at or after it, wrapping around (binary search). Removing
a backend moves exactly its own keys; adding one moves about 1/N. A missing key
falls back to a weighted dart.

A ring is rebuilt only when the eligible set changes (a few recent rings are
kept); each backend's points are hashed once. It must never hash with `hash()`.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Sequence

from gateway.balancer.base import BackendStats
from gateway.balancer.dart import WeightedDart
from gateway.balancer.key_hash import hash64
from gateway.balancer.table_cache import TableCache

DEFAULT_VNODES_PER_WEIGHT = 100
DEFAULT_MAX_RING_SIZE = 100_000

Ring = tuple[list[int], list[int]]  # (sorted points, owner backend index per point)


class RingHashPolicy:
    """Consistent hashing on a sorted ring; weighted dart when there is no key."""

    __slots__ = ("_dart", "_points", "_rings", "_rng")

    def __init__(
        self,
        stats: Sequence[BackendStats],
        rng: random.Random,
        *,
        vnodes_per_weight: int = DEFAULT_VNODES_PER_WEIGHT,
        max_ring_size: int = DEFAULT_MAX_RING_SIZE,
    ) -> None:
        if vnodes_per_weight < 1:
            raise ValueError(f"ring_hash vnodes_per_weight must be >= 1, got {vnodes_per_weight}")
        if max_ring_size < max(len(stats), 1):
            raise ValueError(
                f"ring_hash max_ring_size {max_ring_size} is smaller than the backend count"
            )
        self._rng = rng
        self._dart = WeightedDart(stats)
        wanted = vnodes_per_weight * sum(s.weight for s in stats)
        scale = min(1.0, max_ring_size / wanted) if wanted else 1.0
        self._points: list[list[int]] = []
        for s in stats:
            count = max(1, int(vnodes_per_weight * s.weight * scale))
            prefix = s.backend_id.encode() + b"#"
            self._points.append([hash64(prefix + str(k).encode()) for k in range(count)])
        self._rings: TableCache[Ring] = TableCache(self._build)

    def _build(self, members: tuple[int, ...]) -> Ring:
        pairs = sorted((point, i) for i in members for point in self._points[i])
        return [p for p, _ in pairs], [i for _, i in pairs]

    @property
    def ring_builds(self) -> int:
        return self._rings.builds

    def pick(self, eligible: Sequence[int], key: bytes | None, now: float) -> int | None:
        if not eligible:
            return None
        if key is None:
            return self._dart.draw(eligible, self._rng)
        points, owners = self._rings.get(eligible)
        pos = bisect_left(points, hash64(key))
        return owners[pos] if pos < len(owners) else owners[0]
