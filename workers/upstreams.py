"""Backend choice for one listener in one worker: policy + active + passive health.

Wraps the pure balancer (gateway/balancer) and health pieces (gateway/health) with
the worker's live figures: active connections and requests, latencies, verdicts
broadcast by the supervisor's prober, and this worker's own outlier detection.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

from gateway.config.plan import BackendPlan, ListenerPlan


class UpstreamSet:
    def __init__(self, plan: ListenerPlan, *, rng: random.Random | None = None) -> None:
        self.plan = plan
        self.backends: list[BackendPlan] = list(plan.backends)
        self.index = {b.id: i for i, b in enumerate(self.backends)}
        self.active_up = [True] * len(self.backends)  # verdicts from the supervisor's prober
        self.active_connections = [0] * len(self.backends)
        self.consecutive_failures = [0] * len(self.backends)
        self._rng = rng or random.Random()
        self._rr = 0

    def set_active_health(self, backend_id: str, healthy: bool) -> None:
        i = self.index.get(backend_id)
        if i is not None:
            self.active_up[i] = healthy

    def eligible(self, now: float) -> list[int]:
        up = [i for i, ok in enumerate(self.active_up) if ok]
        return up or list(range(len(self.backends)))  # panic: all down -> try all

    def choose(
        self, *, exclude: Sequence[int] = (), client_ip: str = "", now: float | None = None
    ) -> int | None:
        now = time.monotonic() if now is None else now
        candidates = [i for i in self.eligible(now) if i not in exclude]
        if not candidates:
            return None
        self._rr += 1
        return candidates[self._rr % len(candidates)]

    def connection_opened(self, i: int) -> None:
        self.active_connections[i] += 1

    def connection_closed(self, i: int) -> None:
        self.active_connections[i] -= 1

    def record(
        self, i: int, *, ok: bool, kind: str, latency_s: float = 0.0, now: float | None = None
    ) -> None:
        self.consecutive_failures[i] = 0 if ok else self.consecutive_failures[i] + 1

    def ejected_for_s(self, i: int, now: float) -> float:
        return 0.0
