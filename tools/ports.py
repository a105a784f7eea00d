"""free_port: a loopback port for a server the caller is about to start (tests, benchmarks).

Ports come from below the kernel's ephemeral range (``net.ipv4.ip_local_port_range``): a
port from inside it can be taken, between the check and the server's bind, as the local
port of any outgoing connection on the machine (seen: a test gateway failed to start with
"Address already in use" while the other pytest-xdist worker opened connections). Under
pytest-xdist each worker draws from its own slice, so two workers never hand out the same
port.
"""

from __future__ import annotations

import functools
import os
import random
import socket

# Every port free_port has returned in this process.
_handed_out: set[int] = set()

_LOWEST = 10000  # below: well-known and registered services' usual ports
_DEFAULT_EPHEMERAL_LOW = 32768


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_EPHEMERAL_LOW


@functools.cache  # the range and the worker do not change within a process
def _slice() -> range | None:
    """The ports this process may hand out; None when there is no room below the ephemeral
    range (then the kernel picks, as ``bind(0)`` does)."""
    high = _ephemeral_low()
    if high - _LOWEST < 1000:
        return None
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or count < 1:
        return range(_LOWEST, high)
    index = int(worker[2:]) % count
    size = (high - _LOWEST) // count
    return range(_LOWEST + index * size, _LOWEST + (index + 1) * size)


def _bindable(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port nothing is bound to now, never one this process was given before.

    Still a race with other programs binding ports outside the ephemeral range (the port is
    free only until someone binds it); callers bind it at once.
    """
    ports = _slice()
    while True:
        if ports is None:
            with socket.socket(socket.AF_INET, kind) as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
        else:
            port = random.choice(ports)
            if port in _handed_out or not _bindable(port, kind):
                continue
        if port not in _handed_out:
            _handed_out.add(port)
            return port
