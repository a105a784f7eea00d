"""A `quic` listener's wiring: the QUIC endpoint (workers/quic_listener.py) serving the HTTP/3
front registered as ``"h3"`` in workers/http/registry.FRONTS on every connection.

Owns building, once per worker and listener, the listener's FrontKit (shared with the other
HTTP listeners' shape: workers/http_listener.make_front_kit, which also hooks the drain),
the misdirected-request table when the listener has several certificates, the compiled
HTTP/3 settings, and the endpoint — certificates are loaded here, so a bad file fails the
worker's boot, not a handshake. Must never read the config (only the plan).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

from gateway.config.schema import H3Config
from gateway.http.h3_limits import H3Limits
from gateway.quic_retry_token import RetryMode
from workers.http.registry import FRONTS
from workers.http_listener import make_front_kit
from workers.quic_listener import QuicEndpoint
from workers.sni_contexts import misdirect_table

if TYPE_CHECKING:
    from workers.worker import ListenerRuntime, Worker


def h3_limits(config: H3Config | None) -> H3Limits:
    h = config or H3Config()
    return H3Limits(
        max_concurrent_streams=h.max_concurrent_streams,
        initial_stream_window_size=h.initial_stream_window_size,
        initial_connection_window_size=h.initial_connection_window_size,
        idle_timeout_s=h.idle_timeout_ms / 1000,
        retry=h.retry,
        retry_new_connections_per_s=h.retry_new_connections_per_s,
        early_data=h.early_data,
        max_requests_per_connection=h.max_requests_per_connection,
        enable_connect_protocol=h.enable_connect_protocol,
        max_field_section_size=h.max_field_section_size,
        qpack_max_table_capacity=h.qpack_max_table_capacity,
        qpack_blocked_streams=h.qpack_blocked_streams,
    )


def make_quic_server(runtime: ListenerRuntime, worker: Worker) -> Callable[[], Awaitable[None]]:
    """The listener's datagram task (run in the worker's connections nursery)."""
    plan = runtime.plan
    if plan.tls is None:
        raise RuntimeError(f"quic listener {plan.name!r} has no TLS plan")
    kit = make_front_kit(runtime, worker)
    kit.h1.scheme = b"https"
    kit.h1.server_names = kit.proxy.server_names = misdirect_table(plan.tls)
    kit.h3 = limits = h3_limits(plan.h3)
    endpoint = QuicEndpoint(
        runtime,
        worker,
        FRONTS["h3"](kit),
        stream_window=limits.initial_stream_window_size,
        connection_window=limits.initial_connection_window_size,
        max_streams=limits.max_concurrent_streams,
        idle_timeout_s=limits.idle_timeout_s,
        retry=cast(RetryMode, limits.retry),  # validated against RETRY_MODES
        retry_new_connections_per_s=limits.retry_new_connections_per_s,
        early_data=limits.early_data,
    )
    return endpoint.serve
