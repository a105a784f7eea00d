"""Issue 17, "prove what exists": `per_ip_connection_cap` and `max_inflight_connections` with
live traffic over the cap on tcp, tls and h1 listeners of one worker.

The client-visible outcome (conf/README.md §8 states it): the kernel completes the TCP
handshake, the worker accepts and closes the connection at once, before reading a byte.
A client that waits sees EOF; one that already sent bytes (a request, a ClientHello) sees
EOF or a reset. TLS clients see the handshake fail; HTTP clients get no response. Each
refusal is counted in `security_rejections_total{reason="per_ip_cap"|"inflight_cap"}`.
Other clients on the same worker are served throughout, and a freed slot is usable at once.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator

import pytest
from hardening_peers import EchoServer, outcome, rejections, wait_until
from running_gateway import RunningGateway, free_port

from tools.make_certs import CertFiles, make_certs

pytestmark = pytest.mark.slow

PER_IP = 3
INFLIGHT = 100  # the smallest value validation allows
REQUEST = b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n"


class CapsGateway:
    def __init__(self, gw: RunningGateway, ports: dict[str, int], admin: int, certs: CertFiles):
        self.gw, self.ports, self.admin, self.certs = gw, ports, admin, certs
        self.context = ssl.create_default_context(cafile=str(certs.ca_cert))

    def connect(self, kind: str, source: str) -> socket.socket:
        """A client of listener `kind` from `source` that was served (one exchange done)."""
        s = socket.create_connection(
            ("127.0.0.1", self.ports[kind]), timeout=5, source_address=(source, 0)
        )
        if kind == "tls":
            s = self.context.wrap_socket(s, server_hostname="localhost")
        if kind == "h1":
            s.sendall(REQUEST)
            assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        else:
            s.sendall(b"hello")
            assert s.recv(16) == b"hello"
        return s

    def refused(self, kind: str, source: str) -> str:
        """Connect as a client over a cap would; return what it saw."""
        s = socket.create_connection(
            ("127.0.0.1", self.ports[kind]), timeout=5, source_address=(source, 0)
        )
        with s:
            if kind == "tls":
                try:
                    self.context.wrap_socket(s, server_hostname="localhost").close()
                except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
                    return f"handshake failed: {type(exc).__name__}"
                return "handshake completed"
            if kind == "h1":
                s.sendall(REQUEST)
            return outcome(s, 3.0)


@pytest.fixture(scope="module")
def caps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CapsGateway]:
    tmp = tmp_path_factory.mktemp("caps")
    certs = make_certs(tmp / "certs")
    echo = EchoServer().start()
    http_backend = free_port()
    from running_gateway import DemoBackends

    demo = DemoBackends(http=[http_backend])
    ports = {"tcp": free_port(), "tls": free_port(), "h1": free_port()}
    admin = free_port()
    config = f"""
[runtime]
workers = 1
per_ip_connection_cap = {PER_IP}
max_inflight_connections = {INFLIGHT}

[observability]
metrics_bind = "127.0.0.1:{admin}"

[[listeners]]
name = "tcp"
address = "127.0.0.1:{ports["tcp"]}"
protocol = "tcp"
[[listeners.backends]]
address = "127.0.0.1:{echo.port}"

[[listeners]]
name = "tls"
address = "127.0.0.1:{ports["tls"]}"
protocol = "tls"
[listeners.tls]
cert_path = "{certs.cert}"
key_path = "{certs.key}"
[[listeners.backends]]
address = "127.0.0.1:{echo.port}"

[[listeners]]
name = "h1"
address = "127.0.0.1:{ports["h1"]}"
protocol = "h1"
[listeners.http]
header_timeout_ms = 60000
[[listeners.backends]]
address = "127.0.0.1:{http_backend}"
"""
    gw = RunningGateway(tmp, config).start()
    try:
        yield CapsGateway(gw, ports, admin, certs)
    finally:
        gw.stop()
        demo.stop()
        echo.stop()


ACCEPTABLE = {
    "tcp": {"eof"},  # the client sent nothing yet: a clean FIN
    "tls": {"handshake failed: SSLEOFError", "handshake failed: ConnectionResetError"},
    "h1": {"eof", "reset"},  # the request may arrive before the close: then a reset
}


@pytest.mark.parametrize(("kind", "octet"), [("tcp", 10), ("tls", 20), ("h1", 30)])
def test_per_ip_cap_refuses_the_extra_connection_only(
    caps: CapsGateway, kind: str, octet: int
) -> None:
    capped, neighbour = f"127.0.0.{octet}", f"127.0.0.{octet + 1}"
    before = settled_rejections(caps.admin).get("per_ip_cap", 0)
    held = [caps.connect(kind, capped) for _ in range(PER_IP)]
    try:
        assert caps.refused(kind, capped) in ACCEPTABLE[kind]
        held.append(caps.connect(kind, neighbour))  # another address on the same worker
        for s in held[:PER_IP]:  # the capped client's open connections still work
            s.sendall(REQUEST if kind == "h1" else b"again")
            assert s.recv(65536)
        assert wait_until(lambda: rejections(caps.admin).get("per_ip_cap", 0) == before + 1, 5), (
            rejections(caps.admin)
        )
        held.pop(0).close()  # a freed slot is usable as soon as the worker saw the close
        assert wait_until(lambda: _served(caps, kind, capped), 5)
    finally:
        for s in held:
            s.close()


def settled_rejections(admin: int) -> dict[str, float]:
    """Rejection counts once a heartbeat (1 s) brought nothing new: earlier tests' late
    retries must not land in this test's count."""
    last = rejections(admin)
    while True:
        time.sleep(1.1)
        now = rejections(admin)
        if now == last:
            return now
        last = now


def _served(caps: CapsGateway, kind: str, source: str) -> bool:
    try:
        caps.connect(kind, source).close()
        return True
    except (OSError, AssertionError):
        return False


def test_inflight_cap_refuses_every_listener_then_recovers(caps: CapsGateway) -> None:
    before = settled_rejections(caps.admin).get("inflight_cap", 0)
    sources: Callable[[int], str] = lambda i: f"127.0.1.{1 + i // PER_IP}"  # noqa: E731
    held = [caps.connect("tcp", sources(i)) for i in range(INFLIGHT)]
    try:
        fresh = "127.0.2.1"  # under its per-IP cap: only the in-flight cap can refuse it
        seen = {kind: caps.refused(kind, fresh) for kind in ("tcp", "tls", "h1")}
        assert all(seen[k] in ACCEPTABLE[k] for k in seen), seen
        assert wait_until(lambda: rejections(caps.admin).get("inflight_cap", 0) == before + 3, 5), (
            rejections(caps.admin)
        )
        held.pop().close()
        assert wait_until(lambda: _served(caps, "h1", fresh), 5)
    finally:
        for s in held:
            s.close()
