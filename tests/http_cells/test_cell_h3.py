"""What the H3 backs add to the cell table (H1→H3, H2→H3; the rule table itself runs on them
in test_cell_rules.py): trailers both ways, and a 64 MiB upload and download with the
worker's memory bounded. The backend is the scripted aioquic server
(tests/http_cells/h3_scripted_backend.py): hypercorn's H3 sends no trailers, takes no request
trailers, and moves a few MB/s at best.

64 MiB rather than the H1/H2 cells' 1 GiB: Python QUIC moves a few to tens of MB/s on this
machine (both ends encrypt every 1200-byte packet in Python), and 1 GiB each way through two
cells would cost minutes of the suite's budget. The bound asserted is the same.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import h11
import psutil
import pytest
import trio
from cells import cells_config
from h3_scripted_backend import scripted_h3
from running_gateway import RunningGateway, free_port
from test_cell_gib import RSS_GROWTH_BOUND_BYTES, RssWatch

from tools.make_certs import make_certs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workers" / "http2"))
from h2_peers import H2Client

MIB = 1 << 20
SIZE = 64 * MIB
H3_FRONTS = ["h1", "h2"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, int]]:
    """One h1 listener (HTTP/2 by prior knowledge too) whose backend is the scripted H3 one."""
    tmp = tmp_path_factory.mktemp("h3-cells")
    certs = make_certs(tmp / "certs")
    port = free_port()
    with scripted_h3(certs, name="h3") as h3_port:
        config = cells_config(
            {"h3": port},
            backend_port=0,
            # A busy machine (other test suites beside this one) stretched a transfer past
            # the 60 s default; the memory bound, not the speed, is what this file tests.
            extra_http="total_timeout_ms = 240000",
            max_body_bytes=2 * SIZE,
            h3_port=h3_port,
            ca_path=str(certs.ca_cert),
        )
        running = RunningGateway(tmp, config)
        try:
            running.start()
            yield running, port
        finally:
            running.stop()


def test_request_and_response_trailers_cross_h1_to_h3(
    gateway: tuple[RunningGateway, int],
) -> None:
    _, port = gateway
    conn = h11.Connection(h11.CLIENT)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        request = h11.Request(
            method="POST",
            target="/echo",
            headers=[("host", "cells"), ("te", "trailers"), ("transfer-encoding", "chunked")],
        )
        sock.sendall(
            conn.send(request)
            + conn.send(h11.Data(data=b"hello h3"))
            + conn.send(h11.EndOfMessage(headers=[("x-digest", "sha-256=abc")]))
        )
        events = []
        while not events or not isinstance(events[-1], h11.EndOfMessage):
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
                continue
            events.append(event)
    response = events[0]
    assert isinstance(response, h11.Response) and response.status_code == 200
    assert b"".join(bytes(e.data) for e in events if isinstance(e, h11.Data)) == b"hello h3"
    assert list(events[-1].headers) == [(b"x-digest", b"sha-256=abc"), (b"x-echo-trailer", b"done")]


def test_request_and_response_trailers_cross_h2_to_h3(
    gateway: tuple[RunningGateway, int],
) -> None:
    _, port = gateway

    async def main() -> tuple[dict[bytes, bytes], bytes, dict[bytes, bytes]]:
        client = await H2Client.open(port)
        sid = await client.send_request(
            "/echo",
            method="POST",
            body=b"hello h3",
            trailers=[("x-digest", "sha-256=abc")],
            headers=[("te", "trailers")],
        )
        return await client.response(sid)

    head, body, trailers = trio.run(main)
    assert head[b":status"] == b"200"
    assert body == b"hello h3"
    assert trailers == {b"x-digest": b"sha-256=abc", b"x-echo-trailer": b"done"}


@pytest.fixture(scope="module")
def zeros(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("h3-zeros") / "zeros.bin"
    with open(path, "wb") as fh:
        fh.truncate(SIZE)  # sparse
    return path, hashlib.sha256(bytes(SIZE)).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("front", H3_FRONTS, ids=[f"{f}->h3" for f in H3_FRONTS])
def test_64_mib_up_and_down_at_once_in_bounded_memory(
    gateway: tuple[RunningGateway, int], zeros: tuple[Path, str], front: str
) -> None:
    """The upload and the download run side by side (two streams, or two connections, on one
    worker): the worker's memory stays within the bound the 1 GiB cells assert."""
    running, port = gateway
    path, sha = zeros
    version = "--http2-prior-knowledge" if front == "h2" else "--http1.1"
    url = f"http://127.0.0.1:{port}"
    [worker] = running.ready_workers()
    cpu = psutil.Process(worker["pid"])
    cpu_before = sum(cpu.cpu_times()[:2])
    with RssWatch(worker["pid"]) as rss:
        started = time.monotonic()
        up = subprocess.Popen(
            ["curl", "-sS", version, "-X", "POST", "-T", str(path), f"{url}/sha"],
            stdout=subprocess.PIPE,
            text=True,
        )
        down = subprocess.run(
            [
                "curl",
                "-sS",
                version,
                "-o",
                "/dev/null",
                "-w",
                "%{size_download} %{http_code}",
                f"{url}/bytes/{SIZE}",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            check=True,
        )
        up_out, _ = up.communicate(timeout=240)
        took = time.monotonic() - started
    assert f'"sha256": "{sha}"' in up_out and f'"bytes": {SIZE}' in up_out, up_out
    assert down.stdout == f"{SIZE} 200"
    growth = rss.peak - rss.baseline
    print(
        f"{front}->h3: 2 x 64 MiB in {took:.1f}s, worker CPU "
        f"{sum(cpu.cpu_times()[:2]) - cpu_before:.1f}s, "
        f"RSS {rss.baseline >> 20} MiB + {growth >> 20} MiB"
    )
    assert growth < RSS_GROWTH_BOUND_BYTES
