"""Issue 17 item 10: the L4 relays (tcp and tls listeners) release silent and dead peers.

A connection in which no byte moves is closed at `idle_timeout_ms` on both listener kinds
(client sees EOF, the backend's socket is closed, `relay_idle_timeout` is counted), while a
connection on the same worker that keeps talking outlives it. TCP keepalive against a
vanished peer: tests/kernel/test_relay_keepalive_netns.py.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hardening_peers import EchoServer, rejections, wait_until
from running_gateway import RunningGateway, free_port

from tools.make_certs import make_certs

pytestmark = pytest.mark.slow

IDLE_MS = 1000


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer().start()
    yield server
    server.stop()


def test_idle_relays_are_closed_and_busy_ones_are_not(tmp_path: Path, echo: EchoServer) -> None:
    certs = make_certs(tmp_path / "certs")
    tcp, tls, admin = free_port(), free_port(), free_port()
    relay = f"[listeners.relay]\nidle_timeout_ms = {IDLE_MS}\n"
    config = f"""
[runtime]
workers = 1

[observability]
metrics_bind = "127.0.0.1:{admin}"

[[listeners]]
name = "tcp"
address = "127.0.0.1:{tcp}"
protocol = "tcp"
{relay}
[[listeners.backends]]
address = "127.0.0.1:{echo.port}"

[[listeners]]
name = "tls"
address = "127.0.0.1:{tls}"
protocol = "tls"
[listeners.tls]
cert_path = "{certs.cert}"
key_path = "{certs.key}"
{relay}
[[listeners.backends]]
address = "127.0.0.1:{echo.port}"
"""
    gw = RunningGateway(tmp_path, config).start()
    context = ssl.create_default_context(cafile=str(certs.ca_cert))
    try:
        idle_tcp = socket.create_connection(("127.0.0.1", tcp), timeout=5)
        busy_tcp = socket.create_connection(("127.0.0.1", tcp), timeout=5)
        idle_tls = context.wrap_socket(
            socket.create_connection(("127.0.0.1", tls), timeout=5), server_hostname="localhost"
        )
        busy_tls = context.wrap_socket(
            socket.create_connection(("127.0.0.1", tls), timeout=5), server_hostname="localhost"
        )
        clients = (idle_tcp, busy_tcp, idle_tls, busy_tls)
        for s in clients:
            s.sendall(b"hello")
            assert s.recv(16) == b"hello"
        started = time.monotonic()
        # the busy pair talks every 300 ms for three idle periods; the idle pair says nothing
        while time.monotonic() - started < 3 * IDLE_MS / 1000:
            for s in (busy_tcp, busy_tls):
                s.sendall(b"x")
                assert s.recv(16) == b"x"
            time.sleep(0.3)
        for s in (idle_tcp, idle_tls):
            s.settimeout(0)
            try:
                assert s.recv(16) == b""  # closed: EOF (TLS: close_notify, then EOF)
            except ssl.SSLZeroReturnError:
                pass
        assert sum(1 for c in echo.conns if c.closed_at is not None) == 2
        assert all(
            c.closed_at - started < 2 * IDLE_MS / 1000 + 0.5
            for c in echo.conns
            if c.closed_at is not None
        )
        assert wait_until(lambda: rejections(admin).get("relay_idle_timeout") == 2, 5)
        for s in (busy_tcp, busy_tls):
            s.sendall(b"still")
            assert s.recv(16) == b"still"
        for s in clients:
            s.close()
    finally:
        gw.stop()
