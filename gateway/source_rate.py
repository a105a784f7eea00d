"""Per-source rate of new sessions (UDP) or new connections (QUIC passthrough).

Owns a token bucket per source address (`rate_per_s` tokens a second, holding at most
`burst`), kept in a bounded LRU of sources: a flood of distinct (spoofed) sources cannot
grow it past `max_sources`; a forgotten source starts again with a full bucket, so the
cap on everything a flood can open stays the session table's own bound.

Pure: `now` is passed in (seconds, monotonic). Must never read a clock or block.
"""

from __future__ import annotations

from collections import OrderedDict


class SourceRate:
    __slots__ = ("_buckets", "burst", "limited_total", "max_sources", "rate_per_s")

    def __init__(self, *, rate_per_s: float, burst: float, max_sources: int = 65_536) -> None:
        if rate_per_s <= 0 or burst < 1 or max_sources < 1:
            raise ValueError("rate_per_s > 0, burst >= 1 and max_sources >= 1 are required")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_sources = max_sources
        self.limited_total = 0
        # source -> (tokens, at): tokens as of `at`
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source: str, now: float) -> bool:
        """Take one token for `source`; False (and counted) when its bucket is empty."""
        bucket = self._buckets.get(source)
        if bucket is None:
            tokens = self.burst
            if len(self._buckets) >= self.max_sources:
                self._buckets.popitem(last=False)
        else:
            tokens, at = bucket
            if now > at:
                tokens = min(self.burst, tokens + (now - at) * self.rate_per_s)
            self._buckets.move_to_end(source)
        if tokens < 1:
            self._buckets[source] = (tokens, now)
            self.limited_total += 1
            return False
        self._buckets[source] = (tokens - 1, now)
        return True
