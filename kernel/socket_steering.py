"""Socket-side steering helpers that need no BPF program of their own.

Owns: the no-BPF fallback (`SO_INCOMING_CPU` as the reuseport hint, kernel >= 6.2), and
naming a socket's reuseport group as the reuseport program sees it (`listener_key`).
Must never: create, bind or close sockets; the supervisor owns them.
"""

from __future__ import annotations

import socket

from gateway.steering import IPPROTO_TCP, IPPROTO_UDP, ListenerKey

SO_INCOMING_CPU = getattr(socket, "SO_INCOMING_CPU", 49)


def set_incoming_cpu(sock: socket.socket, cpu: int) -> None:
    """Prefer sock for packets processed on `cpu` within its SO_REUSEPORT group."""
    sock.setsockopt(socket.SOL_SOCKET, SO_INCOMING_CPU, cpu)


def listener_key(sock: socket.socket) -> ListenerKey:
    """The (local port, protocol, family) key of a bound TCP or UDP socket."""
    port = sock.getsockname()[1]
    proto = IPPROTO_TCP if sock.type == socket.SOCK_STREAM else IPPROTO_UDP
    family = 6 if sock.family == socket.AF_INET6 else 4
    return ListenerKey(port, proto, family)
