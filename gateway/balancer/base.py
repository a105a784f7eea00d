"""Shared balancer types: per-backend counters and the policy protocol.

Owns `BackendStats` (the mutable figures a worker keeps per backend) and the
`Policy` protocol every selection policy implements. It must never perform I/O,
read the clock or draw randomness itself: `now` and the `random.Random` are
passed in by the caller.

Contract shared by every policy:
- `stats` is the full backend list (fixed for the life of the policy); indices
  into it are the currency of `pick`.
- `eligible` is a non-empty-or-empty sequence of distinct indices into `stats`,
  in ascending order (what `gateway.health.selection.eligible` returns).
- `pick` returns one member of `eligible`, or None only when `eligible` is empty.
- every weight is an integer >= 1 (the `Balancer` checks this once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class BackendStats:
    """Mutable figures for one backend, owned by one worker (no locking)."""

    backend_id: str  # stable identity (the address string), used by hash policies
    weight: int
    active_connections: int = 0
    active_requests: int = 0
    ewma_latency_s: float | None = None  # fed by the Balancer on request end
    ewma_updated_at: float | None = None  # monotonic `now` of the last EWMA update


class Policy(Protocol):
    """A selection policy: returns an index of `eligible`'s members, or None."""

    def pick(self, eligible: Sequence[int], key: bytes | None, now: float) -> int | None: ...
