"""Liveness of one L4 relay (tcp and tls listeners): TCP keepalive and the idle deadline.

Owns: applying `[listeners.relay]` keepalive to each relayed socket (SO_KEEPALIVE with
TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT, and a TCP_USER_TIMEOUT of the same span so a
peer that vanished with data outstanding is given up as soon as an idle one is), and the
idle deadline: a cancel scope pushed forward by every chunk either direction moves, which
ends a relay in which no byte moved for `idle_timeout_ms`. Either way a dead or silent peer
releases its descriptors. Must never relay bytes or log per connection.
"""

from __future__ import annotations

import math
import socket as stdsocket
from collections.abc import Callable

import trio

from gateway.config.schema import RelayConfig


def apply_keepalive(sock: trio.socket.SocketType, relay: RelayConfig) -> None:
    """TCP keepalive on a relayed socket, when the listener asks for it."""
    if not relay.tcp_keepalive:
        return
    span_ms = (
        relay.keepalive_idle_seconds + relay.keepalive_interval_seconds * relay.keepalive_probes
    ) * 1000
    try:
        sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_KEEPALIVE, 1)
        sock.setsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_KEEPIDLE, relay.keepalive_idle_seconds)
        sock.setsockopt(
            stdsocket.IPPROTO_TCP, stdsocket.TCP_KEEPINTVL, relay.keepalive_interval_seconds
        )
        sock.setsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_KEEPCNT, relay.keepalive_probes)
        # RFC 5482 user timeout: keepalive only probes an idle connection; unacknowledged
        # data (a peer that vanished mid-transfer) is bounded by this instead.
        sock.setsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_USER_TIMEOUT, span_ms)
    except OSError:
        pass  # the peer is already gone: the relay notices on its first read


class IdleDeadline:
    """The relay's idle bound: `scope` is cancelled once no byte moved for `idle_s`
    (0: never). Wrap the relay's byte counters with `counting` so each chunk pushes it."""

    __slots__ = ("idle_s", "scope")

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self.scope = trio.CancelScope(
            deadline=trio.current_time() + idle_s if idle_s > 0 else math.inf
        )

    def counting(self, count: Callable[[int], None]) -> Callable[[int], None]:
        if self.idle_s <= 0:
            return count
        scope, idle_s, now = self.scope, self.idle_s, trio.current_time

        def counted(n: int) -> None:
            count(n)
            scope.deadline = now() + idle_s

        return counted

    @property
    def lapsed(self) -> bool:
        return self.scope.cancelled_caught
