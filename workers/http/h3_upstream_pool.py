"""Per-backend sets of multiplexed HTTP/3 connections and the stream slots on them.

Owns what differs from the HTTP/2 pool (``H2UpstreamPool``, whose packing, waiting, idle
reaping and keep-alive clock it keeps): opening a connection is a UDP socket and a QUIC
handshake (``workers/http/h3_dial``; the certificate is verified there), the connection is
ready once the handshake completed, and a connection is full when the backend's cumulative
MAX_STREAMS or our per-connection cap is reached (``gateway/http/h3_upstream.stream_room``),
which makes the pool open another, up to ``max_per_backend``. Must never speak HTTP/3
itself or retry a request.
"""

from __future__ import annotations

import socket

import trio

from gateway.http.h2_upstream import PING_INTERVAL_S, PING_TIMEOUT_S
from gateway.http.limits import PoolLimits
from workers.http.back import UpstreamRefused
from workers.http.h2_upstream_pool import H2UpstreamPool, _BackendConnections
from workers.http.h3_dial import H3Dialer
from workers.http.h3_upstream_connection import H3UpstreamConnection
from workers.http1.backend import Backend, ConnectFailed


class H3UpstreamPool(H2UpstreamPool):
    def __init__(
        self,
        limits: PoolLimits,
        dialer: H3Dialer,
        *,
        max_header_bytes: int,
        max_headers: int,
        ping_interval_s: float = PING_INTERVAL_S,
        ping_timeout_s: float = PING_TIMEOUT_S,
    ) -> None:
        super().__init__(
            limits,
            _no_tcp_connect,
            max_header_bytes=max_header_bytes,
            max_headers=max_headers,
            ping_interval_s=ping_interval_s,
            ping_timeout_s=ping_timeout_s,
        )
        self._dialer = dialer
        self._h3_max_header_bytes = max_header_bytes
        self._h3_max_headers = max_headers

    async def _open(  # type: ignore[override]
        self, backend: Backend, found: _BackendConnections, deadline: float
    ) -> H3UpstreamConnection:
        nursery = await self._ensure_serving()
        found.connecting += 1
        try:
            sock: socket.socket | None = None
            with trio.move_on_at(deadline):
                try:
                    sock = await self._dialer.open_socket(backend)
                except ConnectFailed as exc:
                    raise UpstreamRefused(str(exc), kind=exc.kind) from None
            if sock is None:
                raise UpstreamRefused(f"{backend.id}: resolve timed out", kind="connect_timeout")
            conn = H3UpstreamConnection(
                sock,
                self._dialer.config_for(backend),
                max_header_bytes=self._h3_max_header_bytes,
                max_headers=self._h3_max_headers,
                on_slot_freed=lambda c: self._slot_freed(found, c),
            )
            await nursery.start(self._run_connection, found, conn)
            with trio.move_on_at(deadline):
                await conn.ready.wait()
            if conn.closed or not conn.handshake_done:
                reason = conn.failure
                conn.close("no QUIC handshake")
                if reason:
                    raise UpstreamRefused(f"{backend.id}: {reason}", kind=conn.failure_kind)
                raise UpstreamRefused(
                    f"{backend.id}: no QUIC handshake in time", kind="connect_timeout"
                )
            return conn
        finally:
            found.connecting -= 1
            found.notify()

    def _slot_freed(self, found: _BackendConnections, conn: H3UpstreamConnection) -> None:  # type: ignore[override]
        found.notify()
        # A connection that never carried a stream is its opener's to use (or the reaper's).
        if conn.idle and not conn.draining and conn.opened_streams > 0:
            idle = sum(1 for c in found.conns if c.idle and not c.draining)
            if idle > self.limits.max_idle_per_backend:
                conn.close_gracefully()


async def _no_tcp_connect(backend: Backend) -> trio.abc.Stream:
    raise RuntimeError("an HTTP/3 pool dials QUIC, not TCP")
