"""Issue 17 item 7: file descriptors, against the real gateway under a small RLIMIT_NOFILE.

- the supervisor raises the soft limit to the hard one at start, and workers inherit it;
- `max_inflight_connections = "auto"` is sized from that limit, so connections past it are
  refused by the cap (counted `inflight_cap`) before the worker ever meets EMFILE;
- with the cap set above what the descriptors allow, a worker that does meet EMFILE answers
  the HTTP client with a local 503 and closes the TCP client, counts `fd_exhausted`, and
  never holds it against the backend: with `consecutive_failures = 1` one counted failure
  would eject the only backend, yet both listeners serve again as soon as fds are free.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hardening_peers import (
    ClosingHttpServer,
    EchoServer,
    LimitedGateway,
    outcome,
    read_status,
    rejections,
    upstream_errors,
    wait_until,
)
from running_gateway import free_port

from gateway.fd_budget import FDS_PER_CONNECTION, WORKER_RESERVED_FDS

pytestmark = pytest.mark.slow

REQUEST = b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n"


def _config(
    web: int, tcp: int, admin: int, http_backend: int, echo: int, inflight: str, fast: bool
) -> str:
    return f"""
[runtime]
workers = 1
max_inflight_connections = {inflight}

[observability]
metrics_bind = "127.0.0.1:{admin}"

[[listeners]]
name = "web"
address = "127.0.0.1:{web}"
protocol = "h1"
[listeners.http]
header_timeout_ms = 60000
h1_fast_path = {"true" if fast else "false"}
[listeners.outlier]
consecutive_failures = 1
[[listeners.backends]]
address = "127.0.0.1:{http_backend}"

[[listeners]]
name = "tcp"
address = "127.0.0.1:{tcp}"
protocol = "tcp"
[listeners.outlier]
consecutive_failures = 1
[[listeners.backends]]
address = "127.0.0.1:{echo}"
"""


class Peers:
    def __init__(self) -> None:
        self.http = ClosingHttpServer().start()
        self.echo = EchoServer().start()

    def stop(self) -> None:
        self.http.stop()
        self.echo.stop()


@pytest.fixture
def peers() -> Iterator[Peers]:
    p = Peers()
    yield p
    p.stop()


def _start(
    tmp: Path, peers: Peers, nofile: tuple[int, int], inflight: str, fast: bool = True
) -> tuple:
    web, tcp, admin = free_port(), free_port(), free_port()
    config = _config(web, tcp, admin, peers.http.port, peers.echo.port, inflight, fast)
    gw = LimitedGateway(tmp, config, nofile=nofile).start()
    return gw, web, tcp, admin


def test_auto_inflight_cap_is_sized_from_the_raised_limit(tmp_path: Path, peers: Peers) -> None:
    hard = 256
    gw, web, _tcp, admin = _start(tmp_path, peers, (100, hard), '"auto"')
    held: list[socket.socket] = []
    try:
        (raised,) = gw.events("nofile_limit")
        assert (raised["soft"], raised["raised_from"], raised["hard"]) == (hard, 100, hard)
        (budget,) = gw.events("worker_fd_budget")
        pooled = 8  # pool_max_idle_per_backend (8) x one h1 backend
        cap = (hard - WORKER_RESERVED_FDS - pooled) // FDS_PER_CONNECTION["tcp"]
        assert budget["nofile"] == hard and budget["max_inflight_connections"] == cap
        statuses = []
        for _ in range(cap + 5):
            s = socket.create_connection(("127.0.0.1", web), timeout=5)
            held.append(s)
            s.sendall(REQUEST)
            statuses.append(read_status(s, 3.0))
        # the first `cap` are served and stay open (keep-alive); the rest are closed at once
        assert statuses[:cap] == [200] * cap
        assert statuses[cap:] == [0] * 5
        assert wait_until(lambda: rejections(admin).get("inflight_cap") == 5, 5)
        assert "accept_fd_exhausted" not in rejections(admin)  # the cap came first
    finally:
        for s in held:
            s.close()
        gw.stop()


@pytest.mark.parametrize("fast", [True, False], ids=["h1_fast_path", "general_core"])
def test_emfile_is_a_local_503_and_never_ejects_the_backend(
    tmp_path: Path, peers: Peers, fast: bool
) -> None:
    gw, web, tcp, admin = _start(tmp_path, peers, (64, 160), "100000", fast)
    held: list[socket.socket] = []
    try:
        status = None
        for _ in range(200):  # each kept-alive client holds one fd; the limit is 160
            s = socket.create_connection(("127.0.0.1", web), timeout=5)
            s.sendall(REQUEST)
            status = read_status(s, 3.0)
            if status != 200:
                s.close()
                break
            held.append(s)
        # the client was accepted with the worker's last descriptor; the backend socket
        # could not be made: a local 503, not a 502 and not silence
        assert status == 503, f"after {len(held)} clients: {status}"
        assert wait_until(lambda: rejections(admin).get("fd_exhausted") == 1, 5), rejections(admin)
        backends = gw.ctl_json("backends")["data"]
        assert len(backends) == 2 and all(b["failures"] == 0 for b in backends), backends
        # the TCP listener on the same worker: accepted with the fd the 503 freed, the
        # backend socket fails with EMFILE, the client is closed at once
        with socket.create_connection(("127.0.0.1", tcp), timeout=5) as t:
            t.sendall(b"ping")
            assert outcome(t, 3.0) in ("eof", "reset")
        assert wait_until(lambda: rejections(admin).get("fd_exhausted", 0) >= 2, 5), rejections(
            admin
        )
        # free some descriptors: both backends serve again at once, nobody was ejected
        for s in held[:20]:
            s.close()
        del held[:20]
        assert wait_until(lambda: _served(web), 5)
        with socket.create_connection(("127.0.0.1", tcp), timeout=5) as t:
            t.sendall(b"ping")
            t.shutdown(socket.SHUT_WR)
            assert t.recv(16) == b"ping"
        assert upstream_errors(admin) == 0
        backends = gw.ctl_json("backends")["data"]
        assert len(backends) == 2 and all(b["failures"] == 0 for b in backends), backends
        assert not any(b["ejected_until_s"] for b in backends), backends
    finally:
        for s in held:
            s.close()
        gw.stop()


def _served(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(REQUEST)
        return read_status(s, 3.0) == 200
