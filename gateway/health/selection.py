"""Which backends a pick may choose from: health verdicts plus panic mode.

Owns `eligible`. A backend is healthy when active health says up (unknown counts
as up) and passive outlier detection has not ejected it. Panic mode follows
Envoy: when the healthy share of backends, by count, is below
`panic_threshold_pct` percent, the balancer ignores health and balances over
every backend, since a few survivors would be crushed by the whole load and the
health signal itself may be what is wrong. A threshold of 0 disables panic mode
(then no healthy backend means an empty list and the caller answers 503).
It must never read health state itself: it is handed the flags.
"""

from __future__ import annotations

from collections.abc import Sequence


def eligible(
    n: int,
    active_up: Sequence[bool],
    ejected: Sequence[bool],
    panic_threshold_pct: int,
) -> tuple[list[int], bool]:
    """(ascending eligible indices, panic) for `n` backends."""
    if len(active_up) != n or len(ejected) != n:
        raise ValueError(f"health flags for {len(active_up)}/{len(ejected)} backends, expected {n}")
    if not 0 <= panic_threshold_pct <= 100:
        raise ValueError(f"panic threshold must be within 0..100, got {panic_threshold_pct}")
    healthy = [i for i in range(n) if active_up[i] and not ejected[i]]
    # healthy/n < pct/100, in integers.
    if n and len(healthy) * 100 < panic_threshold_pct * n:
        return list(range(n)), True
    return healthy, False
