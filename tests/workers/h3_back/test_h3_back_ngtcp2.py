"""The h3 back adapter against an independent HTTP/3 stack: ngtcp2's example server
(Debian ``ngtcp2-server``, ``gtlsserver``: ngtcp2 + nghttp3 + GnuTLS) serving files, clean
and with packet loss both ways (our loss recovery runs on the trio timer that drives
aioquic)."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
from h2_backends import as_backend, exchange, get
from h3_backends import h3_plan, running_h3_back

from gateway.config.schema import BackendTlsConfig
from tools.make_certs import make_certs
from tools.ports import free_port

GTLSSERVER = shutil.which("gtlsserver") or "/usr/sbin/gtlsserver"
pytestmark = pytest.mark.skipif(
    not os.path.exists(GTLSSERVER), reason="ngtcp2-server (gtlsserver) is not installed"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    root = tmp_path_factory.mktemp("ngtcp2")
    body = os.urandom(2 * 1024 * 1024 + 11)
    (root / "htdocs").mkdir()
    (root / "htdocs" / "big.bin").write_bytes(body)
    (root / "htdocs" / "small.txt").write_bytes(b"hello from ngtcp2\n")
    make_certs(root / "certs")
    return root, body


@contextmanager
def gtlsserver(root: Path, *loss: str) -> Iterator[int]:
    port = free_port(socket.SOCK_DGRAM)
    certs = root / "certs"
    proc = subprocess.Popen(
        [
            GTLSSERVER,
            "-q",
            "-d",
            str(root / "htdocs"),
            *loss,
            "127.0.0.1",
            str(port),
            str(certs / "server.key"),
            str(certs / "server.pem"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_bound(port, proc)
        yield port
    finally:
        proc.kill()
        proc.wait()


def _wait_bound(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Until the server holds the UDP port (our own bind then fails)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert proc.poll() is None, "gtlsserver exited"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return
        time.sleep(0.02)
    raise AssertionError("gtlsserver did not bind its port")


def tls(root: Path) -> BackendTlsConfig:
    return BackendTlsConfig(ca_path=str(root / "certs" / "ca.pem"), server_name="localhost")


async def test_files_from_ngtcp2_arrive_whole(site: tuple[Path, bytes]) -> None:
    root, body = site
    with gtlsserver(root) as port:
        plan = h3_plan(port, tls(root))
        async with running_h3_back([plan]) as back:
            with trio.fail_after(20):
                small = await exchange(back, as_backend(plan), get("/small.txt"))
                assert (small.status, small.body) == (200, b"hello from ngtcp2\n")
                big = await exchange(back, as_backend(plan), get("/big.bin"))
                assert big.status == 200
                assert hashlib.sha256(big.body).digest() == hashlib.sha256(body).digest()
                missing = await exchange(back, as_backend(plan), get("/nope"))
                assert missing.status == 404
            assert len(back.pool.connections(as_backend(plan))) == 1


async def test_a_file_arrives_whole_through_packet_loss_both_ways(
    site: tuple[Path, bytes],
) -> None:
    root, body = site
    with gtlsserver(root, "-t", "0.05", "-r", "0.05") as port:
        plan = h3_plan(port, tls(root))
        async with running_h3_back([plan]) as back:
            with trio.fail_after(30):
                big = await exchange(back, as_backend(plan), get("/big.bin"))
            assert big.status == 200
            assert big.body == body
