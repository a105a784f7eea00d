"""The Balancer: one policy plus the per-backend counters that feed it.

Owns the `BackendStats` list of one backend set in one worker, the policy chosen
by name, and the feeding calls the request path makes (connection and request
start/end, latency). A worker builds a new Balancer when the backend list or
weights change (config reload); health changes only change the `eligible`
argument of `pick`. It must never perform I/O, read a clock or create an RNG:
`rng` and `now` are injected.

Feeding contract: an HTTP worker calls `request_started` when it hands a request
to the picked backend and `request_finished` when the response ends (latency =
time to the end of the response head, or of the whole exchange: pick one and keep
it). A TCP/UDP (L4) worker treats each proxied connection or session as a request
as well as a connection, so load-aware policies see it. Unbalanced end calls raise
`AccountingError`: they are bugs in the caller.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from gateway.balancer.base import BackendStats, Policy
from gateway.balancer.errors import AccountingError
from gateway.balancer.latency_ewma import record_latency
from gateway.balancer.registry import make_policy

DEFAULT_EWMA_DECAY_S = 10.0


class Balancer:
    """`Balancer("p2c", [("10.0.0.1:80", 1), ...], random.Random(seed))`."""

    __slots__ = ("_ewma_decay_s", "policy", "policy_name", "stats")

    def __init__(
        self,
        policy_name: str,
        backends: Sequence[tuple[str, int]],
        rng: random.Random,
        *,
        ewma_decay_s: float = DEFAULT_EWMA_DECAY_S,
        **policy_options: int,
    ) -> None:
        seen: set[str] = set()
        # As objects: compiled, an int-typed loop variable would turn True into 1 unchecked.
        entries: Sequence[tuple[str, object]] = backends
        for backend_id, weight in entries:
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
                raise ValueError(
                    f"backend {backend_id!r}: weight must be an integer >= 1, got {weight!r}"
                )
            if backend_id in seen:
                raise ValueError(f"backend {backend_id!r} is listed twice; use weight instead")
            seen.add(backend_id)
        if not ewma_decay_s > 0.0:
            raise ValueError(f"ewma decay must be > 0 seconds, got {ewma_decay_s!r}")
        self.policy_name = policy_name
        self.stats: list[BackendStats] = [BackendStats(bid, w) for bid, w in backends]
        self._ewma_decay_s = ewma_decay_s
        self.policy: Policy = make_policy(
            policy_name, self.stats, rng, ewma_decay_s=ewma_decay_s, options=policy_options
        )

    def pick(self, eligible: Sequence[int], key: bytes | None, now: float) -> int | None:
        """An index into `stats` from `eligible` (ascending), or None if `eligible` is empty."""
        if not eligible:
            return None
        return self.policy.pick(eligible, key, now)

    def connection_opened(self, index: int) -> None:
        self.stats[index].active_connections += 1

    def connection_closed(self, index: int) -> None:
        s = self.stats[index]
        if s.active_connections <= 0:
            raise AccountingError(f"connection_closed without connection_opened on {s.backend_id}")
        s.active_connections -= 1

    def request_started(self, index: int) -> None:
        self.stats[index].active_requests += 1

    def request_finished(self, index: int, latency_s: float | None, now: float) -> None:
        """End one request; `latency_s` None when none was measured (e.g. connect failed)."""
        s = self.stats[index]
        if s.active_requests <= 0:
            raise AccountingError(f"request_finished without request_started on {s.backend_id}")
        s.active_requests -= 1
        if latency_s is not None:
            record_latency(s, latency_s, now, self._ewma_decay_s)
