"""`h1s` listeners end to end: real clients (curl, Python ssl) through the real gateway to a
real HTTP backend. SNI picks the certificate (exact name, wildcard, default without SNI or
for an unknown name; the peer certificate's SAN is asserted), ALPN negotiates http/1.1, a
request whose Host is served by another certificate gets 421, the handshake deadline holds,
and a reload serves certificate files replaced on disk."""

from __future__ import annotations

import http.client
import http.server
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from running_gateway import RunningGateway, free_port

from tools.make_certs import CertFiles, make_certs

pytestmark = pytest.mark.slow

HANDSHAKE_TIMEOUT_MS = 600
# certificate stem -> its names; "server" (localhost) is the listener's default certificate
EXTRA = {"api": ["api.example.com"], "wild": ["*.example.com"]}


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers every GET with what the proxy told it: Host and X-Forwarded-Proto."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = (
            f"host={self.headers.get('host')} proto={self.headers.get('x-forwarded-proto')}\n"
        ).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class H1sGateway:
    def __init__(self, gw: RunningGateway, port: int, certs: CertFiles, certs_dir: Path) -> None:
        self.gw, self.port, self.certs, self.certs_dir = gw, port, certs, certs_dir

    def client_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.certs.ca_cert))
        ctx.check_hostname = False  # the tests assert the SAN themselves (wildcards, no SNI)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def connect(self, sni: str | None, alpn: list[str] | None = None) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return self.client_context(alpn).wrap_socket(raw, server_hostname=sni)


def san_names(tls: ssl.SSLSocket) -> list[str]:
    der = tls.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName)


def get(tls: ssl.SSLSocket, host: str, path: str = "/") -> tuple[int, bytes]:
    """One keep-alive GET on an open TLS connection: (status, body)."""
    tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    response = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
    response.begin()
    return response.status, response.read()


@pytest.fixture(scope="module")
def h1s_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[H1sGateway]:
    tmp = tmp_path_factory.mktemp("h1sgw")
    certs_dir = tmp / "certs"
    certs = make_certs(certs_dir, extra=EXTRA)
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    port = free_port()
    config = f"""
[runtime]
workers = 1
handshake_timeout_ms = {HANDSHAKE_TIMEOUT_MS}
drain_timeout_ms = 1000

[[listeners]]
name = "web"
address = "127.0.0.1:{port}"
protocol = "h1s"
[listeners.tls]
cert_path = "{certs.cert}"
key_path = "{certs.key}"
server_names = ["localhost"]
[[listeners.tls.certificates]]
server_names = ["api.example.com"]
cert_path = "{certs_dir / "api.pem"}"
key_path = "{certs_dir / "api.key"}"
[[listeners.tls.certificates]]
server_names = ["*.example.com"]
cert_path = "{certs_dir / "wild.pem"}"
key_path = "{certs_dir / "wild.key"}"
[[listeners.backends]]
address = "127.0.0.1:{backend.server_address[1]}"
"""
    gw = RunningGateway(tmp, config).start()
    try:
        yield H1sGateway(gw, port, certs, certs_dir)
    finally:
        gw.stop()
        backend.shutdown()


@pytest.mark.parametrize(
    ("sni", "names"),
    [
        ("api.example.com", ["api.example.com"]),  # exact wins over *.example.com
        ("img.example.com", ["*.example.com"]),
        ("IMG.Example.com", ["*.example.com"]),
        ("a.b.example.com", ["localhost"]),  # a wildcard is one label: the default
        ("unknown.org", ["localhost"]),
        (None, ["localhost"]),  # no SNI at all: the default
    ],
)
def test_sni_selects_the_certificate(
    h1s_gateway: H1sGateway, sni: str | None, names: list[str]
) -> None:
    with h1s_gateway.connect(sni) as tls:
        assert san_names(tls) == names
        status, body = get(tls, sni or "127.0.0.1")
        assert status == 200
        assert b"proto=https" in body


def test_alpn_negotiates_http11_and_keeps_the_connection_alive(h1s_gateway: H1sGateway) -> None:
    with h1s_gateway.connect("api.example.com", alpn=["http/1.1"]) as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"
        for _ in range(3):
            status, body = get(tls, "api.example.com")
            assert (status, body) == (200, b"host=api.example.com proto=https\n")


@pytest.mark.parametrize("offer", [["h2", "http/1.1"], ["http/1.1", "h2"]])
def test_alpn_prefers_h2(h1s_gateway: H1sGateway, offer: list[str]) -> None:
    """The server's order decides: h2 first, whatever the client's order."""
    with h1s_gateway.connect("api.example.com", alpn=offer) as tls:
        assert tls.selected_alpn_protocol() == "h2"


@pytest.mark.parametrize(
    ("sni", "host", "status"),
    [
        ("api.example.com", "api.example.com", 200),
        ("api.example.com", "api.example.com:443", 200),
        ("api.example.com", "img.example.com", 421),  # served by the wildcard certificate
        ("api.example.com", "localhost", 421),  # served by the default certificate
        ("img.example.com", "cdn.example.com", 200),  # same (wildcard) certificate
        ("img.example.com", "api.example.com", 421),
        ("localhost", "unknown.org", 200),  # no certificate names it: not misdirected
        (None, "api.example.com", 421),  # no SNI means the default certificate
    ],
)
def test_misdirected_request_across_certificates(
    h1s_gateway: H1sGateway, sni: str | None, host: str, status: int
) -> None:
    with h1s_gateway.connect(sni) as tls:
        got, body = get(tls, host)
        assert got == status, body
        if status == 421:
            assert body == b"421 Misdirected Request\n"
            assert tls.recv(1) == b""  # and the connection is closed: retry on another one


def curl(gw: H1sGateway, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *("curl", "-sS", "--http1.1", "--cacert", str(gw.certs.ca_cert)),
            *("--resolve", f"{name}:{gw.port}:127.0.0.1", "--max-time", "10"),
            *("-w", "\n%{http_code} %{http_version} %{ssl_verify_result}", *extra),
            f"https://{name}:{gw.port}/",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )


@pytest.mark.parametrize("name", ["api.example.com", "img.example.com", "localhost"])
def test_curl_verifies_the_certificate_of_each_name(h1s_gateway: H1sGateway, name: str) -> None:
    """curl checks the chain and that the certificate names the host it asked for."""
    result = curl(h1s_gateway, name)
    assert result.returncode == 0, result.stderr
    body, status = result.stdout.rsplit("\n", 1)
    assert status == "200 1.1 0"
    assert body == f"host={name}:{h1s_gateway.port} proto=https\n"


@pytest.mark.parametrize("name", ["api.example.com", "img.example.com"])
def test_curl_http2_over_alpn(h1s_gateway: H1sGateway, name: str) -> None:
    result = curl(h1s_gateway, name, "--http2")
    assert result.returncode == 0, result.stderr
    body, status = result.stdout.rsplit("\n", 1)
    assert status == "200 2 0"
    assert body == f"host={name}:{h1s_gateway.port} proto=https\n"


@pytest.mark.parametrize("version", ["--http1.1", "--http2"])
def test_curl_gets_421_for_a_host_of_another_certificate(
    h1s_gateway: H1sGateway, version: str
) -> None:
    """HTTP/1.1 Host and HTTP/2 :authority alike (curl sends the Host header as :authority)."""
    result = curl(h1s_gateway, "api.example.com", version, "-H", "Host: img.example.com")
    assert result.returncode == 0, result.stderr
    expected = "1.1" if version == "--http1.1" else "2"
    assert result.stdout.endswith(f"\n421 {expected} 0"), result.stdout
    ok = curl(h1s_gateway, "api.example.com", version)
    assert ok.stdout.endswith(f"\n200 {expected} 0"), ok.stdout


def test_handshake_deadline_closes_a_silent_client(h1s_gateway: H1sGateway) -> None:
    with socket.create_connection(("127.0.0.1", h1s_gateway.port), timeout=10) as raw:
        started = time.monotonic()
        assert raw.recv(1) == b""
        assert time.monotonic() - started < HANDSHAKE_TIMEOUT_MS / 1000 + 2


def test_reload_serves_rotated_certificate_files(h1s_gateway: H1sGateway, tmp_path: Path) -> None:
    """Last in this module: it replaces the api certificate on disk and reloads."""
    with h1s_gateway.connect("api.example.com") as tls:
        before = tls.getpeercert(binary_form=True)
    fresh = make_certs(tmp_path / "fresh", extra={"api": EXTRA["api"]})
    for suffix in ("pem", "key"):
        shutil.copy(fresh.cert.parent / f"api.{suffix}", h1s_gateway.certs_dir / f"api.{suffix}")
    # The new chain is signed by another CA: trust both for the rest of the module.
    ca = h1s_gateway.certs.ca_cert
    ca.write_bytes(ca.read_bytes() + fresh.ca_cert.read_bytes())
    result = h1s_gateway.gw.ctl("reload")
    assert result.returncode == 0, result.stdout + result.stderr
    deadline = time.monotonic() + 10
    while True:
        with h1s_gateway.connect("api.example.com") as tls:
            after = tls.getpeercert(binary_form=True)
            if after != before:
                assert san_names(tls) == ["api.example.com"]
                assert get(tls, "api.example.com")[0] == 200
                break
        assert time.monotonic() < deadline, "the reloaded generation still serves the old file"
        time.sleep(0.1)
    new_der = ssl.PEM_cert_to_DER_cert(
        (h1s_gateway.certs_dir / "api.pem").read_text().split("-----END CERTIFICATE-----")[0]
        + "-----END CERTIFICATE-----\n"
    )
    assert after == new_der
