"""The L4 TCP proxy: one accepted client connection relayed to one backend.

The backend is chosen per connection by the listener's policy; a failed connect
(TCP, PROXY header or backend TLS handshake) is retried on another backend up to
`max_connect_attempts`. Plain socket to plain socket is relayed with splice and
half-close (workers/relay.py); when either side is TLS the stream relay
(workers/stream_relay.py) is used. Both sockets get the listener's TCP keepalive, and
a relay in which no byte moved for `[listeners.relay] idle_timeout_ms` ends
(workers/relay_liveness.py). On drain the connection may finish until the deadline;
then both sides are shut down cleanly (FIN / close_notify, not RST).
"""

from __future__ import annotations

import socket as stdsocket
import time
from collections.abc import Awaitable, Callable

import structlog
import trio

from gateway.config.schema import RelayConfig
from gateway.errors import LocalResourceExhausted, UpstreamError
from gateway.proxy_protocol import Address
from workers.dial import Upstream, open_upstream
from workers.relay import PeerReset, relay
from workers.relay_liveness import IdleDeadline, apply_keepalive
from workers.stats import ListenerStats
from workers.stream_relay import close_streams, relay_streams
from workers.upstreams import UpstreamSet

log = structlog.get_logger("expressgateway.worker")


def local_address(sock: trio.socket.SocketType) -> Address:
    """The address the client dialled (the PROXY header's destination)."""
    name = sock.getsockname()
    return (str(name[0]), int(name[1]))


async def connect_with_retries(
    upstreams: UpstreamSet,
    *,
    client_ip: str,
    stats: ListenerStats,
    client_addr: Address | None = None,
    local_addr: Address = ("0.0.0.0", 0),
) -> tuple[int, Upstream] | None:
    plan = upstreams.plan
    key = upstreams.key_for(client_ip=client_ip)
    source = client_addr or (client_ip, 0)
    tried: list[int] = []
    for _attempt in range(plan.balancer.max_connect_attempts):
        i = upstreams.choose(exclude=tried, key=key)
        if i is None:
            break
        tried.append(i)
        backend = upstreams.backends[i]
        try:
            upstream = await open_upstream(
                backend,
                timeout_s=plan.connect_timeout_ms / 1000,
                client=source,
                local=local_addr,
            )
        except UpstreamError as exc:
            upstreams.record(i, ok=False, kind=exc.kind)
            stats.upstream_error(backend.id, exc.kind)
            continue
        upstreams.record(i, ok=True)
        return i, upstream
    return None


async def _relay_sockets(
    client: trio.socket.SocketType,
    backend: trio.socket.SocketType,
    stats: ListenerStats,
    idle: IdleDeadline,
) -> None:
    with backend:
        try:
            await relay(
                client,
                backend,
                on_upstream_bytes=idle.counting(stats.bytes_in),
                on_downstream_bytes=idle.counting(stats.bytes_out),
            )
        except PeerReset:
            pass  # one side reset: the relay ends and both sockets are closed below
        finally:
            for sock in (client, backend):
                try:
                    sock.shutdown(stdsocket.SHUT_RDWR)
                except OSError:
                    pass


async def relay_to_upstream(
    client: trio.abc.Stream, upstream: Upstream, stats: ListenerStats, idle: IdleDeadline
) -> None:
    """Relay a client stream (plain or TLS) to a connected upstream, then close both."""
    backend: trio.abc.Stream = (
        upstream if isinstance(upstream, trio.SSLStream) else trio.SocketStream(upstream)
    )
    try:
        await relay_streams(
            client,
            backend,
            on_upstream_bytes=idle.counting(stats.bytes_in),
            on_downstream_bytes=idle.counting(stats.bytes_out),
        )
    except PeerReset:
        pass  # one side reset: the relay ends and both streams are closed below
    finally:
        await close_streams(client, backend)


async def proxy_to_backend(
    upstreams: UpstreamSet,
    stats: ListenerStats,
    client_addr: Address,
    local_addr: Address,
    relay_with: Callable[[Upstream, IdleDeadline], Awaitable[None]],
) -> None:
    """Connect (with retries), account the connection, run `relay_with(upstream, idle)`
    within the listener's idle deadline, with TCP keepalive on the backend socket.

    An L4 connection counts as one request: least_request/ewma see its load, and its
    lifetime is the latency the EWMA policy learns from. A backend socket this worker could
    not create (EMFILE) closes the client and is counted as `fd_exhausted`, never against
    the backend.
    """
    try:
        chosen = await connect_with_retries(
            upstreams,
            client_ip=client_addr[0],
            stats=stats,
            client_addr=client_addr,
            local_addr=local_addr,
        )
    except LocalResourceExhausted as exc:
        stats.reject(exc.kind)
        return
    if chosen is None:
        stats.no_backend()
        return
    i, upstream = chosen
    relay_config = upstreams.plan.relay or RelayConfig()
    apply_keepalive(
        upstream.transport_stream.socket if isinstance(upstream, trio.SSLStream) else upstream,
        relay_config,
    )
    idle = IdleDeadline(relay_config.idle_timeout_ms / 1000)
    upstreams.connection_opened(i)
    upstreams.request_started(i)
    started = time.monotonic()
    try:
        with idle.scope:
            await relay_with(upstream, idle)
        if idle.lapsed:
            stats.reject("relay_idle_timeout")
    finally:
        upstreams.request_finished(i, time.monotonic() - started)
        upstreams.connection_closed(i)


async def handle_tcp_connection(
    client: trio.socket.SocketType,
    client_addr: tuple[str, int],
    upstreams: UpstreamSet,
    stats: ListenerStats,
) -> None:
    async def relay_with(upstream: Upstream, idle: IdleDeadline) -> None:
        if isinstance(upstream, trio.SSLStream):
            await relay_to_upstream(trio.SocketStream(client), upstream, stats, idle)
        else:
            await _relay_sockets(client, upstream, stats, idle)

    apply_keepalive(client, upstreams.plan.relay or RelayConfig())
    with client:
        await proxy_to_backend(
            upstreams, stats, (client_addr[0], client_addr[1]), local_address(client), relay_with
        )
