"""TLS towards backends and PROXY protocol v1/v2 towards backends, through the real gateway.

Backends are real Python `ssl` / `http.server` peers (tests/supervisor/tls_peers.py) that
verify what reaches them: the PROXY header (parsed from the spec, not by our encoder)
carries the real client address and port, before any TLS byte; certificate verification
succeeds with the right CA and closes the connection (counted as an upstream error) with
a wrong CA or a wrong server name.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from running_gateway import RunningGateway, free_port
from tls_peers import EchoPeer, HttpsPeer, server_context

from tools.make_certs import CertFiles, make_certs


@dataclass
class Setup:
    gw: RunningGateway
    ports: dict[str, int]
    peers: dict[str, EchoPeer]
    certs: CertFiles
    metrics_port: int


def _listener(name: str, port: int, proto: str, backend_port: int, extra: str = "") -> str:
    return (
        f'[[listeners]]\nname = "{name}"\naddress = "{"[::1]" if name.endswith("6") else "127.0.0.1"}:{port}"\n'
        f'protocol = "{proto}"\n@TLS@{proto}\n'
        f'[[listeners.backends]]\naddress = "127.0.0.1:{backend_port}"\n{extra}\n'
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("backtls")
    certs = make_certs(tmp / "certs")
    wrong = make_certs(tmp / "wrong")
    server_ctx = server_context(str(certs.cert), str(certs.key))
    peers = {
        "tls_ok": EchoPeer(tls=server_ctx),
        "tls_wrong_ca": EchoPeer(tls=server_ctx),
        "tls_wrong_name": EchoPeer(tls=server_ctx),
        "tcp_v1": EchoPeer(expect_proxy=True),
        "tcp_v2": EchoPeer(expect_proxy=True),
        "tls_v1": EchoPeer(expect_proxy=True),
        "tls_v2": EchoPeer(expect_proxy=True),
        "tcp_v2_then_tls": EchoPeer(expect_proxy=True, tls=server_ctx),
        "tcp_v1_6": EchoPeer(expect_proxy=True),
    }
    https = HttpsPeer(server_ctx)
    ca, bad_ca = f'ca_path = "{certs.ca_cert}"', f'ca_path = "{wrong.ca_cert}"'
    extras = {
        "tls_ok": f"[listeners.backends.tls]\n{ca}\n",
        "tls_wrong_ca": f'[listeners.backends.tls]\n{bad_ca}\nserver_name = "localhost"\n',
        "tls_wrong_name": f'[listeners.backends.tls]\n{ca}\nserver_name = "elsewhere.test"\n',
        "tcp_v1": 'proxy_protocol = "v1"\n',
        "tcp_v2": 'proxy_protocol = "v2"\n',
        "tls_v1": 'proxy_protocol = "v1"\n',
        "tls_v2": 'proxy_protocol = "v2"\n',
        "tcp_v2_then_tls": f'proxy_protocol = "v2"\n[listeners.backends.tls]\n{ca}\nserver_name = "localhost"\n',
        "tcp_v1_6": 'proxy_protocol = "v1"\n',
    }
    ports = {name: free_port() for name in [*peers, "h1_ok", "h1_wrong_ca"]}
    tls_table = f'[listeners.tls]\ncert_path = "{certs.cert}"\nkey_path = "{certs.key}"\n'
    text = ""
    for name, peer in peers.items():
        proto = "tls" if name.startswith("tls_v") else "tcp"
        text += _listener(name, ports[name], proto, peer.port, extras[name])
    text += _listener(
        "h1_ok", ports["h1_ok"], "h1", https.port, f"[listeners.backends.tls]\n{ca}\n"
    )
    text += _listener(
        "h1_wrong_ca",
        ports["h1_wrong_ca"],
        "h1",
        https.port,
        f"[listeners.backends.tls]\n{bad_ca}\n",
    )
    text = text.replace("@TLS@tls", tls_table).replace("@TLS@tcp", "").replace("@TLS@h1", "")
    metrics_port = free_port()
    config = (
        f'[runtime]\nworkers = 1\n[observability]\nmetrics_bind = "127.0.0.1:{metrics_port}"\n'
        + text
    )
    gw = RunningGateway(tmp, config).start()
    try:
        yield Setup(gw, ports, peers, certs, metrics_port)
    finally:
        gw.stop()
        https.close()
        for peer in peers.values():
            peer.close()


def exchange(
    port: int, payload: bytes, *, host: str = "127.0.0.1"
) -> tuple[bytes, tuple[str, int]]:
    """Send, read the echo back, close; also return our own (ip, port)."""
    with socket.create_connection((host, port), timeout=10) as s:
        me = s.getsockname()[:2]
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got, (me[0], me[1])


def tls_exchange(setup: Setup, port: int, payload: bytes) -> tuple[bytes, tuple[str, int]]:
    ctx = ssl.create_default_context(cafile=str(setup.certs.ca_cert))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        me = raw.getsockname()[:2]
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
    return got, (me[0], me[1])


def upstream_errors(setup: Setup, listener: str, kind: str) -> float:
    url = f"http://127.0.0.1:{setup.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("expressgateway_upstream_errors_total{") and (
            f'listener="{listener}"' in line and f'kind="{kind}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_for_errors(setup: Setup, listener: str, kind: str) -> float:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (n := upstream_errors(setup, listener, kind)) > 0:
            return n
        time.sleep(0.3)
    return 0.0


def test_backend_tls_verified_with_ca_path(setup: Setup) -> None:
    payload = b"secret" * 5000
    got, _ = exchange(setup.ports["tls_ok"], payload)
    assert got == payload
    assert setup.peers["tls_ok"].handshakes_ok >= 1


@pytest.mark.parametrize("name", ["tls_wrong_ca", "tls_wrong_name"])
def test_backend_tls_verification_failure_closes_and_counts(setup: Setup, name: str) -> None:
    with socket.create_connection(("127.0.0.1", setup.ports[name]), timeout=10) as s:
        # Nothing sent (unread bytes would turn the close into a reset): a clean close.
        assert s.recv(1024) == b""  # the gateway found no verifiable backend
    assert setup.peers[name].handshakes_ok == 0
    assert wait_for_errors(setup, name, "tls_handshake") >= 1


def test_h1_backend_over_tls(setup: Setup) -> None:
    url = f"http://127.0.0.1:{setup.ports['h1_ok']}/over-tls"
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        assert resp.read() == b"hello over tls from /over-tls"


def test_h1_backend_with_wrong_ca_is_refused(setup: Setup) -> None:
    url = f"http://127.0.0.1:{setup.ports['h1_wrong_ca']}/x"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url, timeout=10)
    # 502 when the last attempt failed; 503 when the retry found no other backend to try.
    assert info.value.code in (502, 503)
    assert wait_for_errors(setup, "h1_wrong_ca", "tls_handshake") >= 1


@pytest.mark.parametrize(
    ("name", "version", "family", "secure"),
    [
        ("tcp_v1", 1, "TCP4", False),
        ("tcp_v2", 2, "TCP4", False),
        ("tls_v1", 1, "TCP4", True),
        ("tls_v2", 2, "TCP4", True),
        ("tcp_v2_then_tls", 2, "TCP4", False),
    ],
)
def test_proxy_header_carries_the_real_client(
    setup: Setup, name: str, version: int, family: str, secure: bool
) -> None:
    peer = setup.peers[name]
    before = len(peer.seen)
    payload = f"data after the {name} header".encode()
    got, me = (
        tls_exchange(setup, setup.ports[name], payload)
        if secure
        else exchange(setup.ports[name], payload)
    )
    assert got == payload  # the header was consumed by the backend, never echoed
    assert peer.errors == []
    seen = peer.seen[before]
    assert (seen.version, seen.family) == (version, family)
    assert seen.source == me
    assert seen.destination == ("127.0.0.1", setup.ports[name])


def test_proxy_v1_over_ipv6(setup: Setup) -> None:
    peer = setup.peers["tcp_v1_6"]
    got, me = exchange(setup.ports["tcp_v1_6"], b"six", host="::1")
    assert got == b"six"
    seen = peer.seen[-1]
    assert seen.family == "TCP6"
    assert seen.source == ("::1", me[1])
    assert seen.destination == ("::1", setup.ports["tcp_v1_6"])


def test_proxy_header_then_tls_order(setup: Setup) -> None:
    # The backend read the PROXY header off the raw socket and only then did its TLS
    # handshake: both succeeded, so the gateway sent them in that order (spec section 2).
    assert setup.peers["tcp_v2_then_tls"].handshakes_ok >= 1
    assert re.fullmatch(r"127\.0\.0\.1", setup.peers["tcp_v2_then_tls"].seen[0].source[0])
