"""The HTTP cells under test: a real gateway whose listeners reach one hypercorn backend
as HTTP/1.1 and as HTTP/2 (h2c), and a second hypercorn serving the same app over HTTP/3
(QUIC, its certificate verified against a test CA), and clients of either version.

A cell is (front, back): the client speaks ``front`` to the gateway, the gateway speaks
``back`` to the backend. ``h1`` backs are served by the dedicated HTTP/1.1 path when the
client is HTTP/1.1 (``h1-general`` runs the same cell through the general core).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from running_gateway import ROOT, RunningGateway, free_port, wait_for_port

from tools.make_certs import CertFiles, make_certs

# (front, back) pairs; every test table runs against each.
CELLS = [
    ("h1", "h1"),
    ("h1", "h1-general"),
    ("h2", "h1"),
    ("h1", "h2"),
    ("h2", "h2"),
    ("h1", "h3"),
    ("h2", "h3"),
]
CELL_IDS = [f"{f}->{b}" for f, b in CELLS]
MAX_BODY_BYTES = 4 * 1024 * 1024


@contextmanager
def hypercorn_h3_backend(port: int, certs: CertFiles) -> Iterator[None]:
    """The same app under hypercorn over HTTP/3 on UDP ``port`` (QUIC needs its TLS files;
    the TCP bind beside it is only what tells us hypercorn is up)."""
    tcp_port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hypercorn",
            "--bind",
            f"127.0.0.1:{tcp_port}",
            "--quic-bind",
            f"127.0.0.1:{port}",
            "--certfile",
            str(certs.cert),
            "--keyfile",
            str(certs.key),
            "--workers",
            "1",
            "--worker-class",
            "trio",
            "asgi_backend:app",
        ],
        cwd=ROOT / "tests" / "http_cells",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(tcp_port)  # every socket is bound before hypercorn listens on any
        yield
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def hypercorn_backend(port: int) -> Iterator[None]:
    """tests/http/asgi_backend.py under hypercorn: HTTP/1.1 and h2c on one port."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hypercorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--worker-class",
            "trio",
            "asgi_backend:app",
        ],
        cwd=ROOT / "tests" / "http_cells",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield
    finally:
        proc.kill()
        proc.wait()


def cells_config(
    ports: dict[str, int],
    backend_port: int,
    extra_http: str = "",
    max_body_bytes: int = MAX_BODY_BYTES,
    admin_port: int = 0,
    h3_port: int = 0,
    ca_path: str = "",
) -> str:
    """One listener per back of CELLS, plus ``short`` (H1 back, a 1 s total timeout)."""
    listeners = []
    for back, port in ports.items():
        protocol = back if back in ("h2", "h3") else "h1"
        backend = f"127.0.0.1:{h3_port if back == 'h3' else backend_port}"
        tls = (
            f'[listeners.backends.tls]\nca_path = "{ca_path}"\nserver_name = "localhost"\n'
            if back == "h3"
            else ""
        )
        fast = "false" if back == "h1-general" else "true"
        timeout = "total_timeout_ms = 1000" if back == "short" else ""
        listeners.append(
            f"""
[[listeners]]
name = "cell-{back}"
address = "127.0.0.1:{port}"
protocol = "h1"
[listeners.http]
max_body_bytes = {max_body_bytes}
h1_fast_path = {fast}
{timeout}
{extra_http}
[[listeners.backends]]
address = "{backend}"
protocol = "{protocol}"
{tls}"""
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

    def url(self, back: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[back]}{path}"

    def client(self, front: str, **kwargs: object) -> httpx.Client:
        """httpx speaking HTTP/1.1, or HTTP/2 with prior knowledge (h2c)."""
        if front == "h2":
            return httpx.Client(http1=False, http2=True, timeout=60, **kwargs)  # type: ignore[arg-type]
        return httpx.Client(timeout=60, **kwargs)  # type: ignore[arg-type]


@contextmanager
def running_cells(tmp: Path, max_body_bytes: int = MAX_BODY_BYTES) -> Iterator[Cells]:
    backend_port = free_port()
    h3_port = free_port(socket.SOCK_DGRAM)
    certs = make_certs(tmp / "h3-certs")
    ports = {back: free_port() for back in {b for _, b in CELLS} | {"short"}}
    admin_port = free_port()
    with hypercorn_backend(backend_port), hypercorn_h3_backend(h3_port, certs):
        gateway = RunningGateway(
            tmp,
            cells_config(
                ports,
                backend_port,
                max_body_bytes=max_body_bytes,
                admin_port=admin_port,
                h3_port=h3_port,
                ca_path=str(certs.ca_cert),
            ),
        )
        try:
            gateway.start()
            yield Cells(gateway, ports, admin_port)
        finally:
            gateway.stop()
