"""Backend choice for one listener in one worker: policy + active + passive health.

Wraps the pure balancer (gateway/balancer) and health pieces (gateway/health) with
the worker's live figures: active connections and requests and latencies fed by
the real request path, verdicts broadcast by the supervisor's prober, and this
worker's own outlier detection (consecutive connect errors / timeouts / 5xx).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence

import structlog

from gateway.balancer import Balancer, extract_key, parse_hash_key
from gateway.balancer.maglev import table_size_for
from gateway.config.plan import BackendPlan, ListenerPlan
from gateway.health import FailureKind, OutlierDetector, OutlierSettings, eligible
from gateway.health.outlier import Ejected

log = structlog.get_logger("expressgateway.worker")

_FAILURE_KINDS = {
    "timeout": FailureKind.TIMEOUT,
    "connect_timeout": FailureKind.TIMEOUT,
    "http_5xx": FailureKind.HTTP_5XX,
    "status_5xx": FailureKind.HTTP_5XX,
}


def failure_kind(kind: str) -> FailureKind:
    if kind in _FAILURE_KINDS:
        return _FAILURE_KINDS[kind]
    return FailureKind.TIMEOUT if "timeout" in kind else FailureKind.CONNECT_ERROR


class UpstreamSet:
    def __init__(self, plan: ListenerPlan, *, rng: random.Random | None = None) -> None:
        self.plan = plan
        self.backends: list[BackendPlan] = list(plan.backends)
        self.index = {b.id: i for i, b in enumerate(self.backends)}
        b = plan.balancer
        options: dict[str, int] = {}
        if b.policy == "maglev":
            options["table_size"] = table_size_for(len(self.backends))
        self.balancer = Balancer(
            b.policy,
            [(x.id, x.weight) for x in self.backends],
            rng or random.Random(),
            ewma_decay_s=b.ewma_decay_ms / 1000,
            **options,
        )
        o = plan.outlier
        self.outlier = OutlierDetector(
            len(self.backends),
            OutlierSettings(
                consecutive_failures=o.consecutive_failures,
                base_ejection_s=o.base_ejection_ms / 1000,
                max_ejection_s=o.max_ejection_ms / 1000,
                max_ejection_percent=o.max_ejection_percent,
            ),
        )
        self.hash_key = parse_hash_key(plan.hash_key) if plan.hash_key else None
        self.active_up = [True] * len(self.backends)  # verdicts from the supervisor's prober
        self.consecutive_failures = [0] * len(self.backends)
        self.panic = False
        # The eligible list is recomputed only when it can change: a verdict, an ejection, or
        # the end of the earliest ejection (``_eligible_until``); a pick reads it as is.
        self._eligible: list[int] = []
        self._eligible_until = -math.inf
        # Latencies only feed the ewma policy; others skip the clock read and the fold.
        self.uses_latency = b.policy == "ewma"

    @property
    def active_connections(self) -> list[int]:
        return [s.active_connections for s in self.balancer.stats]

    def set_active_health(self, backend_id: str, healthy: bool) -> None:
        i = self.index.get(backend_id)
        if i is not None:
            self.active_up[i] = healthy
            self._eligible_until = -math.inf

    def eligible(self, now: float) -> list[int]:
        """Ascending eligible indices at ``now`` (the caller must not mutate the list)."""
        if now < self._eligible_until:
            return self._eligible
        indices, panic = eligible(
            len(self.backends),
            self.active_up,
            self.outlier.ejected_flags(now),
            self.plan.balancer.panic_threshold,
        )
        if panic != self.panic:
            self.panic = panic
            log.warning(
                "balancer_panic" if panic else "balancer_panic_over", listener=self.plan.name
            )
        self._eligible = indices
        next_change = self.outlier.next_deadline(now)
        self._eligible_until = math.inf if next_change is None else next_change
        return indices

    def key_for(
        self,
        *,
        client_ip: str,
        headers: Sequence[tuple[bytes, bytes]] | None = None,
        path: bytes | None = None,
        quic_cid: bytes | None = None,
    ) -> bytes | None:
        if self.hash_key is None:
            return None
        return extract_key(
            self.hash_key, client_ip=client_ip, headers=headers, path=path, quic_cid=quic_cid
        )

    def choose(
        self, *, exclude: Sequence[int] = (), key: bytes | None = None, now: float | None = None
    ) -> int | None:
        now = time.monotonic() if now is None else now
        if not exclude:
            return self.balancer.pick(self.eligible(now), key, now)
        candidates = [i for i in self.eligible(now) if i not in exclude]
        if not candidates:
            # Every eligible backend already failed this request: try the others too.
            candidates = [i for i in range(len(self.backends)) if i not in exclude]
        return self.balancer.pick(candidates, key, now)

    def connection_opened(self, i: int) -> None:
        self.balancer.connection_opened(i)

    def connection_closed(self, i: int) -> None:
        self.balancer.connection_closed(i)

    def request_started(self, i: int) -> None:
        self.balancer.request_started(i)

    def request_finished(self, i: int, latency_s: float | None) -> None:
        if latency_s is None or not self.uses_latency:
            self.balancer.request_finished(i, None, 0.0)
        else:
            self.balancer.request_finished(i, latency_s, time.monotonic())

    def record(self, i: int, *, ok: bool, kind: str = "", now: float | None = None) -> None:
        """Feed passive health with one attempt's outcome."""
        now = time.monotonic() if now is None else now
        self.consecutive_failures[i] = 0 if ok else self.consecutive_failures[i] + 1
        verdict = self.outlier.record(i, ok, None if ok else failure_kind(kind), now)
        if isinstance(verdict, Ejected):
            self._eligible_until = -math.inf
            log.warning(
                "backend_ejected",
                listener=self.plan.name,
                backend=self.backends[i].id,
                kind=verdict.kind.value,
                for_s=round(verdict.until - now, 3),
                ejections=verdict.ejection_count,
            )

    def ejected_for_s(self, i: int, now: float) -> float:
        until = self.outlier.ejected_until(i)
        return max(0.0, until - now) if until is not None else 0.0
