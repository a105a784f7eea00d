"""The time-decayed latency average kept in `BackendStats`.

Owns how an observed latency is folded in (`record_latency`) and how the average
reads at a later instant (`decayed_latency`). Decay is by elapsed time, not by
sample count: an observation `dt` seconds after the previous one gets weight
`1 - exp(-dt / decay_s)`, so `decay_s` is the time constant whatever the request
rate. Read at `now`, the average decays towards zero with the time since its last
update (as Finagle's and Linkerd's EWMA balancers do), so a backend that was slow
and then left alone is eventually probed again instead of being shunned forever.
It must never read a clock: `now` is passed in.
"""

from __future__ import annotations

import math

from gateway.balancer.base import BackendStats


def record_latency(stats: BackendStats, latency_s: float, now: float, decay_s: float) -> None:
    """Fold one observed latency (seconds, >= 0) into `stats` at monotonic time `now`."""
    latency_s = max(latency_s, 0.0)
    previous = stats.ewma_latency_s
    updated_at = stats.ewma_updated_at
    if previous is None or updated_at is None:
        stats.ewma_latency_s = latency_s
    else:
        keep = math.exp(-max(now - updated_at, 0.0) / decay_s)
        stats.ewma_latency_s = previous * keep + latency_s * (1.0 - keep)
    stats.ewma_updated_at = now if updated_at is None else max(now, updated_at)


def decayed_latency(stats: BackendStats, now: float, decay_s: float) -> float | None:
    """The average as read at `now` (None if never measured). Does not mutate `stats`."""
    value = stats.ewma_latency_s
    updated_at = stats.ewma_updated_at
    if value is None or updated_at is None:
        return None
    elapsed = now - updated_at
    if elapsed <= 0.0:
        return value
    return value * math.exp(-elapsed / decay_s)
