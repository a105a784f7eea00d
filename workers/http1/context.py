"""What one HTTP/1.1 listener's connection handler needs from the worker that runs it.

Owns the H1Context dataclass, the Backend identity and the per-request record handed to the
access log / metrics hook. Must never read config files: the worker builds it from the
compiled plan.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import trio

from gateway.http.limits import HttpLimits
from gateway.http.model import RequestHead
from gateway.http.retry_budget import RetryBudget
from gateway.http.server_names import ServerNameTable
from workers.http1.backend import Backend, Connect
from workers.http1.deadline_watch import DeadlineWatch
from workers.http1.exchange_steps import clock_now
from workers.http1.pool import UpstreamPool


# init=False + explicit __init__: mypyc builds it natively (a generated __init__ runs interpreted).
@dataclass(slots=True, init=False)
class RequestRecord:
    listener: str
    method: str
    path: str
    status: int  # 0 when the connection closed before any status was sent
    bytes_in: int  # request body bytes read from the client
    bytes_out: int  # response body bytes written to the client
    duration_s: float
    backend_id: str | None
    client: str
    error_kind: str | None
    front: str  # the client's protocol: "h1", "h2", "h3"
    back: str  # the backend's protocol ("" when no backend was reached)
    grpc_status: str  # a gRPC call's status label ("0".."16", "invalid"); "" when not gRPC

    def __init__(
        self,
        listener: str,
        method: str,
        path: str,
        status: int,
        bytes_in: int,
        bytes_out: int,
        duration_s: float,
        backend_id: str | None,
        client: str,
        error_kind: str | None,
        front: str = "h1",
        back: str = "h1",
        grpc_status: str = "",
    ) -> None:
        self.listener = listener
        self.method = method
        self.path = path
        self.status = status
        self.bytes_in = bytes_in
        self.bytes_out = bytes_out
        self.duration_s = duration_s
        self.backend_id = backend_id
        self.client = client
        self.error_kind = error_kind
        self.front = front
        self.back = back
        self.grpc_status = grpc_status


# (request head, client ip, backends already tried for this request) -> the next backend
PickBackend = Callable[[RequestHead, str, Sequence[Backend]], Backend | None]


# On drain, a keep-alive connection idle between requests stays open this long (bounded by
# the drain deadline): a request already on its way from the client is then served with
# "Connection: close" instead of being met by a close it cannot tell from a failure.
DRAIN_IDLE_GRACE_S = 1.0


def _ignore_record(record: RequestRecord) -> None:
    return None


def _ignore_result(backend: Backend, ok: bool, kind: str, latency_s: float) -> None:
    return None


def _ignore_denied() -> None:
    return None


@dataclass(slots=True)
class H1Context:
    listener: str
    pick_backend: PickBackend
    limits: HttpLimits = field(default_factory=HttpLimits)
    scheme: bytes = b"http"
    connect: Connect | None = None  # default: TCP with the pool's connect timeout
    on_request_done: Callable[[RequestRecord], None] = _ignore_record
    on_backend_result: Callable[[Backend, bool, str, float], None] = _ignore_result
    on_retry_denied: Callable[[], None] = _ignore_denied  # the retry budget refused a retry
    draining: trio.Event = field(default_factory=trio.Event)
    # trio clock deadline by which tunnels get their close frames; set by start_drain.
    drain_deadline_at: float = math.inf
    rng: random.Random = field(default_factory=random.Random)
    pool: UpstreamPool | None = None  # built lazily; shared by every connection of the worker
    # Set on listeners served by the general proxy core (workers/http/h1_front): called per
    # admitted request as (client stream, reader, client ip, head, state) -> record.
    general: Callable[..., Awaitable[RequestRecord]] | None = None
    # Set on dedicated-path listeners: the general core for the requests the dedicated path
    # does not serve itself (gRPC calls, answered UNIMPLEMENTED as on every HTTP/1.1 front).
    grpc_general: Callable[..., Awaitable[RequestRecord]] | None = None
    # TLS listeners with several certificates: which one serves which name (the 421 check).
    server_names: ServerNameTable | None = None
    budget: RetryBudget | None = None  # built lazily; the listener's retries in this worker
    # The deadlines of this listener's connections in the current run (built with the first).
    watch: DeadlineWatch | None = None
    # When drain began: the trio clock time by which connections idle between requests close.
    idle_close_at: float = math.inf
    # Plain TCP client connections run on the dispatcher (workers/http1/dispatch.py); False:
    # each in its own trio task (tests compare the two).
    resident: bool = True

    def start_drain(self, grace_s: float) -> None:
        """Begin draining: idle keep-alives close after a short grace (at most grace_s), tunnels
        get close frames after grace_s."""
        now = trio.current_time()
        self.drain_deadline_at = now + grace_s
        if self.idle_close_at == math.inf:
            self.idle_close_at = min(now + DRAIN_IDLE_GRACE_S, max(now, self.drain_deadline_at))
            watch = self.watch
            if watch is not None and watch.runs_here():
                watch.close_idle_by(self.idle_close_at)
        self.draining.set()

    def deadline_watch(self) -> DeadlineWatch:
        """The watch of this listener's connection deadlines, started in the current run."""
        watch = self.watch
        if watch is None or not watch.runs_here():
            watch = self.watch = DeadlineWatch(clock_now())
            watch.start()
        return watch

    def retry_budget(self) -> RetryBudget:
        if self.budget is None:
            self.budget = RetryBudget(self.limits.retry_budget)
        return self.budget

    def upstream_pool(self) -> UpstreamPool:
        if self.pool is None:
            self.pool = UpstreamPool(self.limits.pool, self.connect)
        return self.pool
