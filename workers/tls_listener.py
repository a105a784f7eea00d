"""A `tls` listener: terminate TLS, then relay the plaintext to TCP backends.

Owns the per-connection sequence: TLS handshake bounded by `[runtime]
handshake_timeout_ms` (a client that connects and never finishes the handshake is
closed at the deadline), backend choice and connect with retries (workers/tcp_proxy.py;
PROXY header and backend TLS as each backend's plan says), then the stream relay with
half-close towards the backend and close_notify towards the client
(workers/stream_relay.py), with the listener's keepalive and idle timeout
(workers/relay_liveness.py). The server SSLContext is built once per worker and
listener, in `make_tls_handler`, never per connection. Must never log per connection.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from gateway.config.schema import RelayConfig
from workers.dial import Upstream, load_backend_tls
from workers.relay_liveness import IdleDeadline, apply_keepalive
from workers.stream_relay import close_streams
from workers.tcp_proxy import local_address, proxy_to_backend, relay_to_upstream
from workers.tls_context import server_context

if TYPE_CHECKING:
    from workers.worker import ListenerRuntime, Worker

Handler = Callable[[trio.socket.SocketType, tuple[str, int]], Awaitable[None]]


def _listener_tls_context(runtime: ListenerRuntime) -> ssl.SSLContext:
    for lst in runtime.config.listeners:
        if lst.name == runtime.plan.name and lst.tls is not None:
            return server_context(lst.tls)
    raise RuntimeError(f"listener {runtime.plan.name!r} has no [listeners.tls] table")


async def _send_pending_alert(stream: trio.SSLStream[trio.SocketStream]) -> None:
    """Best effort: send the alert OpenSSL wrote when the handshake failed.

    trio marks the stream broken on a handshake error without flushing its outgoing
    buffer, so a refused client (e.g. TLS 1.2 against `tls13_only`) would see a bare EOF
    instead of `protocol_version`. The buffer is trio's private MemoryBIO; if it moves,
    this degrades to the bare EOF, nothing worse.
    """
    outgoing = getattr(stream, "_outgoing", None)
    if not isinstance(outgoing, ssl.MemoryBIO):
        return
    alert = outgoing.read()
    if alert:
        with trio.move_on_after(0.5):
            try:
                await stream.transport_stream.send_all(alert)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client is gone already


async def _handshake(stream: trio.SSLStream[trio.SocketStream], timeout_s: float) -> str | None:
    """None when the handshake completed in time; otherwise the reason it did not."""
    with trio.move_on_after(timeout_s):
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError:
            await _send_pending_alert(stream)
            return "tls_handshake_failed"
        return None
    return "tls_handshake_timeout"


def make_tls_handler(runtime: ListenerRuntime, worker: Worker) -> Handler:
    context = _listener_tls_context(runtime)
    load_backend_tls(runtime.plan.backends)
    handshake_timeout_s = runtime.config.runtime.handshake_timeout_ms / 1000
    upstreams = runtime.upstreams
    stats = runtime.stats

    relay_config = runtime.plan.relay or RelayConfig()

    async def handle(sock: trio.socket.SocketType, addr: tuple[str, int]) -> None:
        apply_keepalive(sock, relay_config)
        local = local_address(sock)
        client = trio.SSLStream(trio.SocketStream(sock), context, server_side=True)
        try:
            failure = await _handshake(client, handshake_timeout_s)
            if failure is not None:
                stats.reject(failure)
                return

            async def relay_with(upstream: Upstream, idle: IdleDeadline) -> None:
                await relay_to_upstream(client, upstream, stats, idle)

            await proxy_to_backend(upstreams, stats, (addr[0], addr[1]), local, relay_with)
        finally:
            await close_streams(client)

    return handle
