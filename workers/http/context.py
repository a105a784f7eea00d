"""What the general proxy core needs from the listener that runs it.

Owns the ProxyContext: compiled limits, the route step (one answer per listener until L7
routing), the pick hook (balancer + health), the back adapter of each backend, and the
accounting hooks (passive health, metrics, access log). Built by the listener glue from
the plan; must never read config files.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from gateway.http.limits import HttpLimits
from gateway.http.model import HeaderList, RequestHead
from gateway.http.retry_budget import RetryBudget
from gateway.http.server_names import ServerNameTable
from workers.http.back import BackAdapter
from workers.http1.backend import Backend
from workers.http1.context import PickBackend, RequestRecord


def _ignore_record(record: RequestRecord) -> None:
    return None


def _ignore_result(backend: Backend, ok: bool, kind: str, latency_s: float) -> None:
    return None


def _ignore_reason(reason: str) -> None:
    return None


def _ignore_denied() -> None:
    return None


def _one_route(head: RequestHead) -> str:
    return ""


@dataclass(slots=True)
class ProxyContext:
    listener: str
    pick_backend: PickBackend
    # backend id -> the adapter speaking that backend's protocol
    back_for: dict[str, BackAdapter]
    limits: HttpLimits = field(default_factory=HttpLimits)
    # The route step: which backend set serves the request ("" is the listener's only one).
    route: Callable[[RequestHead], str] = _one_route
    on_request_done: Callable[[RequestRecord], None] = _ignore_record
    on_backend_result: Callable[[Backend, bool, str, float], None] = _ignore_result
    # A defence fired (its reason counted in the security-rejection metric).
    on_reject: Callable[[str], None] = _ignore_reason
    # The listener's retry budget in this worker (shared with the HTTP/1.1 fast path).
    retry_budget: RetryBudget | None = None
    on_retry_denied: Callable[[], None] = _ignore_denied
    # TLS listeners with several certificates: the table of the 421 check (None: no check).
    server_names: ServerNameTable | None = None
    # Fields added to every relayed response (``alt_svc``: the listener's Alt-Svc value).
    response_headers: HeaderList = field(default_factory=list)
    draining: trio.Event = field(default_factory=trio.Event)
    drain_deadline_at: float = math.inf
    rng: random.Random = field(default_factory=random.Random)

    def budget(self) -> RetryBudget:
        if self.retry_budget is None:
            self.retry_budget = RetryBudget(self.limits.retry_budget)
        return self.retry_budget

    def start_drain(self, grace_s: float) -> None:
        self.drain_deadline_at = trio.current_time() + grace_s
        self.draining.set()
