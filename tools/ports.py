"""free_port: a loopback port for a server the caller is about to start (tests, benchmarks)."""

from __future__ import annotations

import socket

# Every port free_port has returned in this process. The kernel picks a bound-then-closed port
# at random and may pick it again: two listeners of one config once got the same one.
_handed_out: set[int] = set()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port nothing is bound to now, never one this process was given before.

    Still a race with other processes (the port is free only until someone binds it); callers
    bind it at once.
    """
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
