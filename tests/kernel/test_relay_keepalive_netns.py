"""Issue 17 item 10: TCP keepalive on the L4 relay releases a client that vanished.

The gateway runs in the server namespace of a veth pair, the client in the other. The
client's link then goes down: no FIN or RST will ever come. On a listener with keepalive
(1 s idle, 2 probes 1 s apart) the worker finds the peer dead and closes both sockets (the
backend sees its connection end); the same client on a listener with
`tcp_keepalive = false` is still holding its descriptors when the test ends.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from hardening_peers import EchoServer, wait_until
from kernel_netns import Veth, in_netns, sh
from running_gateway import RunningGateway

pytestmark = [pytest.mark.slow, pytest.mark.root]


def test_keepalive_releases_a_vanished_client(tmp_path: Path) -> None:
    veth = Veth()
    veth.up()
    gw = None
    try:
        with in_netns(veth.srv):
            echo = EchoServer().start()  # on the server namespace's loopback
        config = f"""
[runtime]
workers = 1

[[listeners]]
name = "ka"
address = "{veth.srv_ip}:8001"
protocol = "tcp"
[listeners.relay]
idle_timeout_ms = 0
keepalive_idle_seconds = 1
keepalive_interval_seconds = 1
keepalive_probes = 2
[[listeners.backends]]
address = "127.0.0.1:{echo.port}"

[[listeners]]
name = "noka"
address = "{veth.srv_ip}:8002"
protocol = "tcp"
[listeners.relay]
idle_timeout_ms = 0
tcp_keepalive = false
[[listeners.backends]]
address = "127.0.0.1:{echo.port}"
"""
        with in_netns(veth.srv):  # the supervisor (and its workers) live in the namespace
            gw = RunningGateway(tmp_path, config).start()
        clients = []
        for port in (8001, 8002):  # one after the other: echo.conns keeps their order
            with in_netns(veth.cli):
                s = socket.create_connection((veth.srv_ip, port), timeout=5)
            clients.append(s)
            s.sendall(b"hello")
            assert s.recv(16) == b"hello"
        assert echo.open_connections() == 2
        ka_backend, noka_backend = echo.conns  # accepted in the order the clients connected
        # The client's host vanishes: no FIN, no RST, nothing answers any more.
        sh("ip", "-n", veth.cli, "link", "set", veth.cli_if, "down")
        vanished = time.monotonic()
        # keepalive: 1 s idle + 2 x 1 s probes (and the matching TCP_USER_TIMEOUT)
        assert wait_until(lambda: ka_backend.closed_at is not None, 10), "keepalive never fired"
        assert ka_backend.closed_at is not None and ka_backend.closed_at - vanished < 8
        assert noka_backend.closed_at is None  # without keepalive the relay would hold on
        for s in clients:
            s.close()
    finally:
        if gw is not None:
            gw.stop()
        veth.down()
