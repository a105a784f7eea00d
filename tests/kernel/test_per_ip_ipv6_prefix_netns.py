"""Issue 17 item 15: the per-IP connection cap counts IPv6 clients per /64.

The gateway runs in a network namespace whose loopback carries addresses in two /64s.
A client that spreads its connections over addresses of one /64 (as any host may: it is
handed the whole prefix) meets one shared cap; a client in the neighbouring /64 does not.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
from hardening_peers import EchoServer, outcome
from kernel_netns import in_netns, sh
from running_gateway import RunningGateway

pytestmark = [pytest.mark.slow, pytest.mark.root]

LISTEN = "fd00:64:9::1"
SAME_64 = ["fd00:64:1::a", "fd00:64:1::b", "fd00:64:1:0:ffff::c"]
OTHER_64 = "fd00:64:2::a"


def test_per_ip_cap_is_shared_by_one_ipv6_slash_64(tmp_path: Path) -> None:
    ns = f"eg64{os.getpid() % 100000}{uuid.uuid4().hex[:3]}"
    sh("ip", "netns", "add", ns)
    gw = None
    held: list[socket.socket] = []
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        for addr in [LISTEN, *SAME_64, OTHER_64]:
            sh("ip", "-n", ns, "addr", "add", f"{addr}/128", "dev", "lo", "nodad")
        with in_netns(ns):
            echo = EchoServer().start()
        config = f"""
[runtime]
workers = 1
per_ip_connection_cap = 2

[[listeners]]
name = "tcp6"
address = "[{LISTEN}]:8080"
protocol = "tcp"
[[listeners.backends]]
address = "127.0.0.1:{echo.port}"
"""
        with in_netns(ns):
            gw = RunningGateway(tmp_path, config).start()

        def connect(source: str) -> socket.socket:
            with in_netns(ns):
                return socket.create_connection(
                    (LISTEN, 8080), timeout=5, source_address=(source, 0)
                )

        for source in SAME_64[:2]:  # two different addresses, one /64: the cap is reached
            s = connect(source)
            held.append(s)
            s.sendall(b"hi")
            assert s.recv(16) == b"hi"
        with connect(SAME_64[2]) as third:  # a third address of the same /64 is refused
            assert outcome(third, 3.0) == "eof"
        with connect(OTHER_64) as neighbour:  # the next /64 is another client
            neighbour.sendall(b"hi")
            assert neighbour.recv(16) == b"hi"
    finally:
        for s in held:
            s.close()
        if gw is not None:
            gw.stop()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
