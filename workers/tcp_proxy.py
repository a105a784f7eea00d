"""The L4 TCP proxy: one accepted client connection relayed to one backend.

The backend is chosen per connection by the listener's policy; a failed connect is
retried on another backend up to `max_connect_attempts`. Bytes are relayed with
half-close (workers/relay.py). On drain the connection may finish until the
deadline; then both sides are shut down cleanly (FIN, not RST).
"""

from __future__ import annotations

import socket as stdsocket
import time

import structlog
import trio

from gateway.errors import UpstreamError
from workers.dial import dial_backend
from workers.relay import PeerReset, relay
from workers.stats import ListenerStats
from workers.upstreams import UpstreamSet

log = structlog.get_logger("expressgateway.worker")


async def connect_with_retries(
    upstreams: UpstreamSet, *, client_ip: str, stats: ListenerStats
) -> tuple[int, trio.socket.SocketType] | None:
    plan = upstreams.plan
    key = upstreams.key_for(client_ip=client_ip)
    tried: list[int] = []
    for _attempt in range(plan.balancer.max_connect_attempts):
        i = upstreams.choose(exclude=tried, key=key)
        if i is None:
            break
        tried.append(i)
        backend = upstreams.backends[i]
        started = time.monotonic()
        try:
            sock = await dial_backend(backend, timeout_s=plan.connect_timeout_ms / 1000)
        except UpstreamError as exc:
            upstreams.record(i, ok=False, kind=exc.kind)
            stats.upstream_error(backend.id, exc.kind)
            continue
        upstreams.record(i, ok=True)
        stats.connect_latency(time.monotonic() - started)
        return i, sock
    return None


async def handle_tcp_connection(
    client: trio.socket.SocketType,
    client_addr: tuple[str, int],
    upstreams: UpstreamSet,
    stats: ListenerStats,
) -> None:
    with client:
        chosen = await connect_with_retries(upstreams, client_ip=client_addr[0], stats=stats)
        if chosen is None:
            stats.no_backend()
            return
        i, backend = chosen
        upstreams.connection_opened(i)
        upstreams.request_started(i)
        started = time.monotonic()
        try:
            with backend:
                try:
                    await relay(
                        client,
                        backend,
                        on_upstream_bytes=stats.bytes_in,
                        on_downstream_bytes=stats.bytes_out,
                    )
                except PeerReset:
                    stats.reset()
                finally:
                    for sock in (client, backend):
                        try:
                            sock.shutdown(stdsocket.SHUT_RDWR)
                        except OSError:
                            pass
        finally:
            # An L4 connection counts as one request: least_request/ewma see its load,
            # and its lifetime is the latency the EWMA policy learns from.
            upstreams.request_finished(i, time.monotonic() - started)
            upstreams.connection_closed(i)
