"""The HTTP cells under test: a real gateway whose listeners reach one hypercorn backend
as HTTP/1.1 and as HTTP/2 (h2c), and a second hypercorn serving the same app over HTTP/3
(QUIC, its certificate verified against the test CA), and clients of HTTP/1.1, HTTP/2 and
HTTP/3.

A cell is (front, back): the client speaks ``front`` to the gateway, the gateway speaks
``back`` to the backend. ``h1`` backs are served by the dedicated HTTP/1.1 path when the
client is HTTP/1.1 (``h1-general`` runs the same cell through the general core). ``h3``
fronts reach the backend through a ``quic`` listener bound to the UDP port of the number the
cleartext listener of that back uses on TCP, so a URL names the same authority either way.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from h3_transport import H3Transport
from hypercorn_process import hypercorn_process
from running_gateway import RunningGateway, free_port

from tools.make_certs import CertFiles, make_certs

# (front, back) pairs; every test table runs against each.
CELLS = [
    ("h1", "h1"),
    ("h1", "h1-general"),
    ("h2", "h1"),
    ("h1", "h2"),
    ("h2", "h2"),
    ("h3", "h1"),
    ("h3", "h2"),
    ("h1", "h3"),
    ("h2", "h3"),
    ("h3", "h3"),
]
H3_BACKS = ("h1", "h2", "h3")
CELL_IDS = [f"{f}->{b}" for f, b in CELLS]
MAX_BODY_BYTES = 4 * 1024 * 1024


@contextmanager
def hypercorn_backend(port: int) -> Iterator[None]:
    """tests/http/asgi_backend.py under hypercorn: HTTP/1.1 and h2c on one port."""
    with hypercorn_process(["--bind", f"127.0.0.1:{port}"], port):
        yield


@contextmanager
def hypercorn_h3_backend(port: int, certs: CertFiles) -> Iterator[None]:
    """The same app under hypercorn over HTTP/3 on UDP ``port`` (QUIC needs its TLS files;
    the TCP bind beside it is only what tells us hypercorn is up: every socket is bound
    before hypercorn listens on any)."""
    tcp_port = free_port()
    args = ["--bind", f"127.0.0.1:{tcp_port}", "--quic-bind", f"127.0.0.1:{port}"]
    args += ["--certfile", str(certs.cert), "--keyfile", str(certs.key)]
    with hypercorn_process(args, tcp_port):
        yield


def _backend(back: str, backend_port: int, h3_port: int, ca_path: str) -> str:
    """The backend table a listener of ``back`` reaches the cells' backend with."""
    if back == "h3":
        return f"""[[listeners.backends]]
address = "127.0.0.1:{h3_port}"
protocol = "h3"
[listeners.backends.tls]
ca_path = "{ca_path}"
server_name = "localhost"
"""
    protocol = "h2" if back == "h2" else "h1"
    return f"""[[listeners.backends]]
address = "127.0.0.1:{backend_port}"
protocol = "{protocol}"
"""


# Pooled connections are dropped before hypercorn closes them (its keep-alive timeout is
# 5 s): a reuse racing the backend's close cannot be retried for a body already sent, and a
# loaded run saw exactly that as a 502 (set the backend's keep-alive longer than the pool's).
POOL_IDLE = "pool_idle_timeout_ms = 2000"


def cells_config(
    ports: dict[str, int],
    backend_port: int,
    extra_http: str = "",
    max_body_bytes: int = MAX_BODY_BYTES,
    admin_port: int = 0,
    total_timeout_ms: int | None = None,
    certs: CertFiles | None = None,
    h3_port: int = 0,
    ca_path: str = "",
) -> str:
    """One listener per back of CELLS, plus ``short`` (H1 back, a 1 s total timeout); with
    ``certs``, a quic listener per back of H3_BACKS on the same port number (UDP). ``h3``
    backs reach the HTTP/3 backend on UDP ``h3_port``, verified against ``ca_path``."""
    listeners = []
    for back in [b for b in H3_BACKS if b in ports] if certs is not None else ():
        assert certs is not None
        listeners.append(
            f"""
[[listeners]]
name = "cell-h3-{back}"
address = "127.0.0.1:{ports[back]}"
protocol = "quic"
[listeners.tls]
cert_path = "{certs.cert}"
key_path = "{certs.key}"
[listeners.http]
max_body_bytes = {max_body_bytes}
{POOL_IDLE}
{f"total_timeout_ms = {total_timeout_ms}" if total_timeout_ms is not None else ""}
{extra_http}
{_backend(back, backend_port, h3_port, ca_path)}"""
        )
    for back, port in ports.items():
        fast = "false" if back == "h1-general" else "true"
        timeout = "total_timeout_ms = 1000" if back == "short" else ""
        if total_timeout_ms is not None and back != "short":
            timeout = f"total_timeout_ms = {total_timeout_ms}"
        listeners.append(
            f"""
[[listeners]]
name = "cell-{back}"
address = "127.0.0.1:{port}"
protocol = "h1"
[listeners.http]
max_body_bytes = {max_body_bytes}
{POOL_IDLE}
h1_fast_path = {fast}
{timeout}
{extra_http}
{_backend(back, backend_port, h3_port, ca_path)}"""
        )
    return f"""
[runtime]
workers = 1
drain_timeout_ms = 10000

[observability]
log_format = "json"
access_log = true
{f'metrics_bind = "127.0.0.1:{admin_port}"' if admin_port else ""}
{"".join(listeners)}
"""


@dataclass
class Cells:
    gateway: RunningGateway
    ports: dict[str, int]  # back -> the listener port that reaches the backend that way
    admin_port: int = 0
    certs: CertFiles | None = None

    def url(self, back: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[back]}{path}"

    def client(self, front: str, **kwargs: object) -> httpx.Client:
        """httpx speaking HTTP/1.1, HTTP/2 with prior knowledge (h2c), or HTTP/3 (aioquic)."""
        if front == "h3":
            return httpx.Client(transport=H3Transport(), timeout=60, **kwargs)  # type: ignore[arg-type]
        if front == "h2":
            return httpx.Client(http1=False, http2=True, timeout=60, **kwargs)  # type: ignore[arg-type]
        return httpx.Client(timeout=60, **kwargs)  # type: ignore[arg-type]


@contextmanager
def running_cells(
    tmp: Path, max_body_bytes: int = MAX_BODY_BYTES, total_timeout_ms: int | None = None
) -> Iterator[Cells]:
    backend_port = free_port()
    h3_port = free_port(socket.SOCK_DGRAM)
    ports = {back: free_port() for back in {b for _, b in CELLS} | {"short"}}
    admin_port = free_port()
    certs = make_certs(tmp / "certs")
    with hypercorn_backend(backend_port), hypercorn_h3_backend(h3_port, certs):
        gateway = RunningGateway(
            tmp,
            cells_config(
                ports,
                backend_port,
                max_body_bytes=max_body_bytes,
                admin_port=admin_port,
                total_timeout_ms=total_timeout_ms,
                certs=certs,
                h3_port=h3_port,
                ca_path=str(certs.ca_cert),
            ),
        )
        try:
            gateway.start()
            yield Cells(gateway, ports, admin_port, certs)
        finally:
            gateway.stop()
