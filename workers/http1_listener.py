"""Wires an `h1` listener's plan into the HTTP/1.1 proxy (workers/http1).

Builds the H1Context from the compiled plan: limits, backend choice through the
listener's UpstreamSet (policy, hash key, health), request accounting for the
load-aware policies, passive health from every attempt's outcome, metrics and the
access log from every request's record.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from gateway.errors import UpstreamError
from gateway.http.forwarding import ForwardingPolicy
from gateway.http.limits import HttpLimits, PoolLimits, WebSocketLimits
from gateway.http.model import RequestHead
from gateway.http.retry_budget import RetryBudgetLimits
from workers.dial import load_backend_tls, open_backend_stream
from workers.http1 import Backend, H1Context, RequestRecord
from workers.http1.backend import Connect, ConnectFailed

if TYPE_CHECKING:
    from workers.worker import ListenerRuntime, Worker

# Outcomes that say nothing about the backend's health (the request ended for other reasons).
_NEUTRAL_KINDS = frozenset({"aborted", "retry_stale"})
_SECURITY_STATUSES = frozenset({400, 408, 413, 431})
# Local failures (this worker out of descriptors): answered 503, counted beside the rejections.
_LOCAL_KINDS = frozenset({"fd_exhausted"})


def limits_from_plan(runtime: ListenerRuntime) -> HttpLimits:
    plan = runtime.plan
    http = plan.http
    assert http is not None
    config = runtime.config
    ws = plan.websocket
    return HttpLimits(
        header_timeout_ms=http.header_timeout_ms,
        body_timeout_ms=http.body_timeout_ms,
        total_timeout_ms=http.total_timeout_ms,
        head_timeout_ms=http.head_timeout_ms,
        grpc_max_deadline_ms=http.grpc_max_deadline_ms,
        retry_buffer_bytes=http.retry_buffer_bytes,
        max_body_bytes=http.max_body_bytes,
        max_headers=http.max_headers,
        max_header_bytes=http.max_header_bytes,
        underscore_policy=config.runtime.header_underscore_policy,
        max_keepalive_requests=config.runtime.max_keepalive_requests,
        strict_te=config.security.strict_te,
        websocket=WebSocketLimits(
            enabled=ws.enabled if ws is not None else True,
            idle_timeout_s=float(ws.idle_timeout_seconds) if ws is not None else 60.0,
        ),
        pool=PoolLimits(
            max_idle_per_backend=http.pool_max_idle_per_backend,
            max_per_backend=http.pool_max_per_backend,
            max_tunnels_per_backend=http.pool_max_tunnels_per_backend,
            idle_timeout_s=http.pool_idle_timeout_ms / 1000,
            connect_timeout_ms=plan.connect_timeout_ms,
            max_attempts=plan.balancer.max_connect_attempts,
        ),
        retry_budget=RetryBudgetLimits(
            percent=http.retry_budget_percent, min_concurrency=http.retry_budget_min_concurrency
        ),
        forwarding=ForwardingPolicy(http.forwarded_headers, tuple(http.trusted_proxies)),
    )


def backend_connect(runtime: ListenerRuntime) -> Connect | None:
    """TLS towards backends that ask for it (contexts built now); None: plain TCP for all."""
    upstreams = runtime.upstreams
    if all(b.tls is None for b in upstreams.backends):
        return None
    load_backend_tls(upstreams.backends)

    async def connect(backend: Backend) -> trio.abc.Stream:
        try:
            return await open_backend_stream(upstreams.backends[upstreams.index[backend.id]])
        except UpstreamError as exc:
            raise ConnectFailed(str(exc), kind=exc.kind) from None

    return connect


def make_h1_context(runtime: ListenerRuntime, worker: Worker) -> H1Context:
    upstreams = runtime.upstreams
    stats = runtime.stats
    targets = [Backend(b.id, b.host, b.port) for b in upstreams.backends]
    index = upstreams.index
    # Per-request work here is on the hot path: label tuples are built once, the gauge is
    # bumped in place (WorkerMetrics allows it), and no hash key is extracted without a policy
    # that uses one.
    backend_active = stats.metrics.backend_active
    active_labels = {t.id: (runtime.plan.name, t.id) for t in targets}
    hashed = upstreams.hash_key is not None

    def pick_backend(head: RequestHead, client: str, tried: Sequence[Backend]) -> Backend | None:
        key = (
            upstreams.key_for(client_ip=client, headers=head.headers, path=head.path)
            if hashed
            else None
        )
        exclude = [index[b.id] for b in tried] if tried else ()
        i = upstreams.choose(exclude=exclude, key=key)
        if i is None:
            return None
        upstreams.request_started(i)
        target = targets[i]
        backend_active[active_labels[target.id]] += 1
        return target

    def on_backend_result(backend: Backend, ok: bool, kind: str, latency_s: float) -> None:
        i = index[backend.id]
        backend_active[active_labels[backend.id]] -= 1
        if kind in _NEUTRAL_KINDS:
            upstreams.request_finished(i, None)
            return
        upstreams.record(i, ok=ok, kind=kind)
        upstreams.request_finished(i, latency_s if ok else None)
        if not ok:
            stats.upstream_error(backend.id, kind)

    def on_retry_denied() -> None:
        stats.upstream_error("", "retry_budget_exhausted")

    # The access log's buffer itself (compiled), when the log is on.
    access = worker.access_log.buffer if worker.access_log.enabled else None

    def on_request_done(record: RequestRecord) -> None:
        stats.request_done(
            record.backend_id or "",
            record.status,
            record.duration_s,
            record.bytes_in,
            record.bytes_out,
        )
        stats.exchange_protocols(record.front, record.back)
        if record.grpc_status:
            stats.grpc_request(record.grpc_status)
        if record.error_kind and (
            record.status in _SECURITY_STATUSES or record.error_kind in _LOCAL_KINDS
        ):
            stats.reject(record.error_kind)
        if access is not None:
            access.append(record)

    return H1Context(
        listener=runtime.plan.name,
        pick_backend=pick_backend,
        limits=limits_from_plan(runtime),
        on_request_done=on_request_done,
        on_backend_result=on_backend_result,
        on_retry_denied=on_retry_denied,
        connect=backend_connect(runtime),
    )
