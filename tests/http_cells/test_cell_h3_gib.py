"""A 1 GiB upload and a 1 GiB download through H3 → H1 and H1 → H3 keep the worker's
memory bounded (the H3 half of the GiB table, tests/http_cells/test_cell_gib.py).

Real peers on both sides: H3 → H1 is aioquic's client (tests/http_cells/h3_transport.py,
under httpx) against the quic listener, hypercorn (HTTP/1.1) behind; H1 → H3 is curl against
the h1 listener, the scripted aioquic server (tests/http_cells/h3_scripted_backend.py)
behind. No side holds a body: uploads are generated (H3) or read from a sparse file (curl)
as they go, the far side hashes what arrives; downloads are hashed as they arrive, the
backend generates them (hypercorn's /bytes pattern, the scripted server's zeros, both paced
by what was acknowledged). Each direction is compared byte-exact: the SHA-256 and length of
what crossed against those of what was sent.

The stated bound is the GiB table's: the worker grows by less than RSS_GROWTH_BOUND_BYTES
(48 MiB) over its size before the transfer, whatever the body size. Bodies cross an H3 front
within its flow-control windows ([listeners.h3] initial_stream_window_size /
initial_connection_window_size) and the per-stream send buffer; an H3 back within the
upstream windows and send buffer of gateway/http/h3_upstream.py.

The size is H3_GIB_TEST_BYTES (default: 1 GiB). Both ends of each QUIC connection are
pure-Python aioquic, which sets the pace (see the throughput each test prints).
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from asgi_backend import PATTERN
from cells import Cells, cells_config, hypercorn_backend
from h3_scripted_backend import scripted_h3
from h3_transport import H3Transport
from running_gateway import RunningGateway, free_port
from test_cell_gib import GIB, RSS_GROWTH_BOUND_BYTES, RssWatch

from tools.make_certs import make_certs

SIZE = int(os.environ.get("H3_GIB_TEST_BYTES", GIB))
CHUNK = 64 * 1024
TIMEOUT_S = 600


@dataclass(frozen=True)
class Expected:
    zeros: str  # SHA-256 of SIZE zero bytes (uploads; the scripted server's /bytes)
    pattern: str  # SHA-256 of hypercorn's /bytes/SIZE


def _sha_of_repeats(block: bytes, size: int) -> str:
    digest = hashlib.sha256()
    whole, rest = divmod(size, len(block))
    for _ in range(whole):
        digest.update(block)
    digest.update(block[:rest])
    return digest.hexdigest()


@pytest.fixture(scope="module")
def expected() -> Expected:
    return Expected(_sha_of_repeats(bytes(1 << 20), SIZE), _sha_of_repeats(PATTERN, SIZE))


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cells]:
    """A quic listener to hypercorn (HTTP/1.1) and an h1 listener to the scripted H3 server,
    both with a body cap above SIZE and a 10 minute total timeout (the test is about memory)."""
    tmp = tmp_path_factory.mktemp("h3-gib")
    certs = make_certs(tmp / "certs")
    backend_port = free_port()
    ports = {"h1": free_port(), "h3": free_port()}
    with hypercorn_backend(backend_port), scripted_h3(certs, name="gib") as h3_port:
        gateway = RunningGateway(
            tmp,
            cells_config(
                ports,
                backend_port,
                max_body_bytes=2 * SIZE,
                total_timeout_ms=TIMEOUT_S * 1000,
                certs=certs,
                h3_port=h3_port,
                ca_path=str(certs.ca_cert),
            ),
        )
        try:
            gateway.start()
            yield Cells(gateway, ports, certs=certs)
        finally:
            gateway.stop()


def _zeros(size: int) -> Iterator[bytes]:
    block = bytes(CHUNK)
    while size > 0:
        n = min(size, CHUNK)
        size -= n
        yield block if n == CHUNK else block[:n]


def _h3_up(url: str) -> tuple[str, int]:
    with httpx.Client(transport=H3Transport(timeout_s=60), timeout=TIMEOUT_S) as client:
        resp = client.post(url, content=_zeros(SIZE))
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    return answer["sha256"], answer["bytes"]


def _h3_down(url: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with (
        httpx.Client(transport=H3Transport(timeout_s=60), timeout=TIMEOUT_S) as client,
        client.stream("GET", url) as resp,
    ):
        assert resp.status_code == 200
        for chunk in resp.iter_raw():
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _curl_up(url: str, path: Path) -> tuple[str, int]:
    out = subprocess.run(
        ["curl", "-sS", "--http1.1", "-X", "POST", "-T", str(path), url],
        capture_output=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    answer = httpx.Response(200, content=out.stdout).json()
    return answer["sha256"], answer["bytes"]


def _curl_down(url: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with subprocess.Popen(["curl", "-sS", "--http1.1", "-f", url], stdout=subprocess.PIPE) as curl:
        assert curl.stdout is not None
        while chunk := curl.stdout.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        assert curl.wait(TIMEOUT_S) == 0
    return digest.hexdigest(), size


@pytest.fixture(scope="module")
def sparse_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("h3-gib-file") / "zeros.bin"
    with open(path, "wb") as fh:
        fh.truncate(SIZE)  # sparse: reads as zeros, costs no disk
    return path


# (front, back, direction)
TRANSFERS = [("h3", "h1", "up"), ("h3", "h1", "down"), ("h1", "h3", "up"), ("h1", "h3", "down")]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("front", "back", "direction"), TRANSFERS, ids=[f"{f}->{b}-{d}" for f, b, d in TRANSFERS]
)
def test_h3_gib_transfer_in_bounded_memory(
    cells: Cells,
    expected: Expected,
    sparse_file: Path,
    front: str,
    back: str,
    direction: str,
) -> None:
    [worker] = cells.gateway.ready_workers()
    cpu = psutil.Process(worker["pid"])
    cpu_before = sum(cpu.cpu_times()[:2])
    with RssWatch(worker["pid"]) as rss:
        started = time.monotonic()
        if front == "h3" and direction == "up":
            got, want = _h3_up(cells.url(back, "/sha")), expected.zeros
        elif front == "h3":
            got, want = _h3_down(cells.url(back, f"/bytes/{SIZE}")), expected.pattern
        elif direction == "up":
            got, want = _curl_up(cells.url(back, "/sha"), sparse_file), expected.zeros
        else:
            got, want = _curl_down(cells.url(back, f"/bytes/{SIZE}")), expected.zeros
        took = time.monotonic() - started
    growth = rss.peak - rss.baseline
    print(
        f"{front}->{back} {direction}: {SIZE >> 20} MiB in {took:.1f}s "
        f"({SIZE / took / 1e6:.1f} MB/s), worker CPU {sum(cpu.cpu_times()[:2]) - cpu_before:.1f}s, RSS {rss.baseline >> 20} MiB + {growth >> 20} MiB"
    )
    assert got == (want, SIZE)
    assert growth < RSS_GROWTH_BOUND_BYTES
