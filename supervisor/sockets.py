"""The listening sockets, created and kept by the supervisor.

One SO_REUSEPORT socket per (listener socket key, CPU). Workers inherit them; a
replacement worker on the same CPU inherits the same socket and its accept queue,
so a reload never closes a TCP listener. Without the BPF datapath each socket gets
`SO_INCOMING_CPU = cpu`, which the kernel (>= 6.2) uses to pick the socket of the
CPU that received the packet. With the BPF datapath the hint stays set: the
reuseport program picks the socket, and the kernel's hash fallback (no program verdict)
still honours the hint. `SocketTable.on_new_group` lets the datapath attach its reuseport
program to the first socket of each group before that socket is bound.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable

import structlog

from gateway.config.plan import SocketKey
from gateway.errors import ConfigError, Problem

log = structlog.get_logger("expressgateway.supervisor")

BACKLOG = 4096
_SO_INCOMING_CPU = getattr(socket, "SO_INCOMING_CPU", 49)


def open_listening_socket(
    key: SocketKey,
    cpu: int,
    *,
    incoming_cpu_hint: bool,
    before_bind: Callable[[socket.socket], None] | None = None,
) -> socket.socket:
    family = socket.AF_INET6 if key.family == 6 else socket.AF_INET
    kind = socket.SOCK_STREAM if key.transport == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if incoming_cpu_hint:
            sock.setsockopt(socket.SOL_SOCKET, _SO_INCOMING_CPU, cpu)
        if before_bind is not None:
            before_bind(sock)
        sock.bind((key.host, key.port))
        if kind == socket.SOCK_STREAM:
            sock.listen(BACKLOG)
        sock.setblocking(False)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


class SocketTable:
    """All listening sockets by (key, cpu); opened before workers start, closed last."""

    def __init__(self, *, incoming_cpu_hint: bool = True) -> None:
        self.sockets: dict[tuple[SocketKey, int], socket.socket] = {}
        self.incoming_cpu_hint = incoming_cpu_hint
        # called on the first socket of a SO_REUSEPORT group, before it is bound
        self.on_new_group: Callable[[socket.socket], None] | None = None

    def ensure(self, keys: list[SocketKey], cpus: list[int]) -> list[tuple[SocketKey, int]]:
        """Open every missing (key, cpu) socket; on failure close what this call opened."""
        opened: list[tuple[SocketKey, int]] = []
        for key in keys:
            for cpu in cpus:
                if (key, cpu) in self.sockets:
                    continue
                first = not any(k == key for k, _ in self.sockets)
                try:
                    self.sockets[(key, cpu)] = open_listening_socket(
                        key,
                        cpu,
                        incoming_cpu_hint=self.incoming_cpu_hint,
                        before_bind=self.on_new_group if first else None,
                    )
                except OSError as exc:
                    self.close(opened)
                    where = (
                        f"[{key.host}]:{key.port}" if key.family == 6 else f"{key.host}:{key.port}"
                    )
                    raise ConfigError(
                        [
                            Problem(
                                "listeners.address",
                                f"cannot listen on {key.transport} {where}: {exc.strerror}",
                            )
                        ]
                    ) from None
                opened.append((key, cpu))
        return opened

    def fds_for(self, keys: dict[str, SocketKey], cpu: int) -> dict[str, int]:
        return {name: self.sockets[(key, cpu)].fileno() for name, key in keys.items()}

    def close(self, entries: list[tuple[SocketKey, int]]) -> None:
        for entry in entries:
            sock = self.sockets.pop(entry, None)
            if sock is not None:
                sock.close()

    def unused(self, keys: list[SocketKey], cpus: list[int]) -> list[tuple[SocketKey, int]]:
        wanted = {(k, c) for k in keys for c in cpus}
        return [entry for entry in self.sockets if entry not in wanted]

    def close_all(self) -> None:
        self.close(list(self.sockets))


def enable_tcp_migrate_req() -> None:
    """Let the kernel move queued connections to a sibling socket when one closes."""
    path = "/proc/sys/net/ipv4/tcp_migrate_req"
    try:
        with open(path) as fh:
            if fh.read().strip() == "1":
                return
        with open(path, "w") as fh:
            fh.write("1")
        log.info("sysctl_set", key="net.ipv4.tcp_migrate_req", value=1)
    except OSError as exc:
        log.warning(
            "sysctl_unavailable",
            key="net.ipv4.tcp_migrate_req",
            error=errno.errorcode.get(exc.errno or 0, str(exc)),
        )
