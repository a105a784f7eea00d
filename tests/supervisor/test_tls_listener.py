"""`tls` listeners end to end: real clients (openssl s_client, Python ssl) through the real
gateway to a real echo backend; TLS 1.3 negotiated, tls13_only refusing TLS 1.2, the
handshake deadline, and the half-close / close_notify sequence."""

from __future__ import annotations

import select
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from running_gateway import DemoBackends, RunningGateway, free_port

from tools.make_certs import CertFiles, make_certs

HANDSHAKE_TIMEOUT_MS = 600


class TlsGateway:
    def __init__(self, gw: RunningGateway, port: int, strict_port: int, certs: CertFiles) -> None:
        self.gw, self.port, self.strict_port, self.certs = gw, port, strict_port, certs

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.certs.ca_cert))


@pytest.fixture(scope="module")
def tls_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsGateway]:
    tmp = tmp_path_factory.mktemp("tlsgw")
    certs = make_certs(tmp / "certs")
    echo = free_port()
    backends = DemoBackends(tcp_echo=[echo])
    port, strict_port = free_port(), free_port()
    tls = f'cert_path = "{certs.cert}"\nkey_path = "{certs.key}"\n'
    config = f"""
[runtime]
workers = 1
handshake_timeout_ms = {HANDSHAKE_TIMEOUT_MS}

[[listeners]]
name = "tls"
address = "127.0.0.1:{port}"
protocol = "tls"
[listeners.tls]
{tls}
[[listeners.backends]]
address = "127.0.0.1:{echo}"

[[listeners]]
name = "tls13"
address = "127.0.0.1:{strict_port}"
protocol = "tls"
[listeners.tls]
{tls}tls13_only = true
[[listeners.backends]]
address = "127.0.0.1:{echo}"
"""
    gw = RunningGateway(tmp, config).start()
    try:
        yield TlsGateway(gw, port, strict_port, certs)
    finally:
        gw.stop()
        backends.stop()


def s_client(port: int, ca: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *("openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(ca)),
            *("-verify_return_error", "-servername", "localhost", "-brief", *extra),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def read_until(proc: subprocess.Popen[bytes], needle: bytes, timeout_s: float = 10.0) -> bytes:
    assert proc.stdout is not None
    got = b""
    deadline = time.monotonic() + timeout_s
    while needle not in got and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = proc.stdout.raw.read(4096)  # type: ignore[attr-defined]
            if not chunk:
                break
            got += chunk
    return got


def test_openssl_s_client_round_trips_over_tls13(tls_gateway: TlsGateway) -> None:
    proc = s_client(tls_gateway.port, tls_gateway.certs.ca_cert)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"hello through the gateway\n")
        proc.stdin.flush()
        echoed = read_until(proc, b"hello through the gateway\n")
        assert b"hello through the gateway\n" in echoed
    finally:
        proc.stdin.close()  # type: ignore[union-attr]  # EOF: s_client sends close_notify
        proc.wait(timeout=10)
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert b"Protocol version: TLSv1.3" in err, err
    assert b"Verification: OK" in err, err


def test_tls12_client_gets_an_ecdhe_aead_suite(tls_gateway: TlsGateway) -> None:
    ctx = tls_gateway.client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", tls_gateway.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as s,
    ):
        assert s.version() == "TLSv1.2"
        name = s.cipher()[0]
        assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name), name
        assert s.compression() is None
        s.sendall(b"ping")
        assert s.recv(16) == b"ping"


def test_tls13_only_refuses_a_tls12_only_client(tls_gateway: TlsGateway) -> None:
    proc = s_client(tls_gateway.strict_port, tls_gateway.certs.ca_cert, "-tls1_2")
    out, err = proc.communicate(b"never echoed\n", timeout=10)
    assert proc.returncode != 0
    assert b"never echoed" not in out
    assert b"alert protocol version" in err or b"no protocols available" in err, err
    # ... while a TLS 1.3 client is served on the same listener.
    ctx = tls_gateway.client_context()
    with (
        socket.create_connection(("127.0.0.1", tls_gateway.strict_port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as s,
    ):
        assert s.version() == "TLSv1.3"
        s.sendall(b"strict")
        assert s.recv(16) == b"strict"


def test_python_client_bulk_data_and_close_notify_round_trip(tls_gateway: TlsGateway) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    ctx = tls_gateway.client_context()
    with socket.create_connection(("127.0.0.1", tls_gateway.port), timeout=10) as raw:
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        assert s.version() == "TLSv1.3"
        s.sendall(payload)
        got = bytearray()
        while len(got) < len(payload):
            chunk = s.recv(65536)
            assert chunk, f"EOF after {len(got)} bytes"
            got += chunk
        assert bytes(got) == payload
        # Our close_notify -> gateway half-closes the backend (SHUT_WR) -> the echo backend
        # ends -> the gateway answers with its own close_notify: unwrap() completes.
        plain = s.unwrap()
        assert plain.recv(1) == b""


def test_client_that_never_handshakes_is_closed_at_the_deadline(tls_gateway: TlsGateway) -> None:
    for first_bytes in (b"", b"\x16\x03\x01\x00"):  # silent; a stalled ClientHello
        with socket.create_connection(("127.0.0.1", tls_gateway.port), timeout=10) as s:
            started = time.monotonic()
            s.sendall(first_bytes)
            assert s.recv(1024) == b""  # closed by the gateway, not by our timeout
            waited_s = time.monotonic() - started
        assert HANDSHAKE_TIMEOUT_MS / 1000 * 0.8 <= waited_s <= HANDSHAKE_TIMEOUT_MS / 1000 + 3


def test_untrusting_client_fails_verification(tls_gateway: TlsGateway, tmp_path: Path) -> None:
    other = make_certs(tmp_path / "other")
    ctx = ssl.create_default_context(cafile=str(other.ca_cert))
    with socket.create_connection(("127.0.0.1", tls_gateway.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ctx.wrap_socket(raw, server_hostname="localhost")
    # The gateway stays healthy for the next client.
    with (
        socket.create_connection(("127.0.0.1", tls_gateway.port), timeout=10) as raw,
        tls_gateway.client_context().wrap_socket(raw, server_hostname="localhost") as s,
    ):
        s.sendall(b"still here")
        assert s.recv(32) == b"still here"
