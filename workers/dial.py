"""Dialling a backend: resolve, connect with a deadline, translate OS errors once.

Returns a connected non-blocking trio socket, or raises UpstreamConnectError /
UpstreamTimeout (gateway/errors.py) carrying the failure kind for metrics and
passive health.
"""

from __future__ import annotations

import errno
import socket as stdsocket

import trio

from gateway.config.plan import BackendPlan
from gateway.errors import UpstreamConnectError, UpstreamTimeout


async def dial_backend(backend: BackendPlan, *, timeout_s: float) -> trio.socket.SocketType:
    with trio.move_on_after(timeout_s) as scope:
        try:
            infos = await trio.socket.getaddrinfo(
                backend.host, backend.port, type=stdsocket.SOCK_STREAM
            )
        except OSError as exc:
            raise UpstreamConnectError("resolve", f"{backend.id}: {exc}") from None
        last: OSError | None = None
        for family, type_, proto, _canon, sockaddr in infos:
            sock = trio.socket.socket(family, type_, proto)
            try:
                sock.setsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_NODELAY, 1)
                await sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
            except BaseException:
                sock.close()
                raise
        kind = "refused" if last is not None and last.errno == errno.ECONNREFUSED else "connect"
        raise UpstreamConnectError(kind, f"{backend.id}: {last.strerror if last else 'no address'}")
    assert scope.cancelled_caught
    raise UpstreamTimeout("connect_timeout", f"{backend.id}: no connection within {timeout_s:.3f}s")
