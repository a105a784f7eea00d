"""The HTTP/2 front with independent clients: curl, nghttp, h2load, and h2 in the client
role watching the frames of a drain."""

from __future__ import annotations

import re
import socket
import subprocess
import time

import h2.config
import h2.connection
import h2.events
import httpx
import trio
from cells import Cells


def test_curl_prior_knowledge_get_and_upload(cells: Cells) -> None:
    url = cells.url("h1", "/sha")
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--http2-prior-knowledge",
            "-X",
            "POST",
            "--data-binary",
            "@-",
            url,
            "-w",
            "\\n%{http_version}",
        ],
        input=b"z" * 200_000,
        capture_output=True,
        timeout=30,
        check=True,
    )
    body, version = out.stdout.rsplit(b"\n", 1)
    assert version == b"2"
    assert b'"bytes": 200000' in body


def test_curl_expect_100_continue_over_h2(cells: Cells) -> None:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-v",
            "--http2-prior-knowledge",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            "@-",
            cells.url("h1", "/sha"),
        ],
        input=b"q" * 50_000,
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert b'"bytes": 50000' in out.stdout
    assert b"< HTTP/2 100" in out.stderr


def test_nghttp_sees_our_settings(cells: Cells) -> None:
    out = subprocess.run(
        ["nghttp", "-nv", cells.url("h1", "/headers")],
        capture_output=True,
        timeout=30,
        check=True,
        text=True,
    )
    settings = out.stdout[out.stdout.index("recv SETTINGS frame") :]
    assert "SETTINGS_MAX_CONCURRENT_STREAMS(0x03):256" in settings
    assert "SETTINGS_INITIAL_WINDOW_SIZE(0x04):1048576" in settings
    assert "SETTINGS_MAX_HEADER_LIST_SIZE(0x06):65536" in settings
    assert re.search(r"recv \(stream_id=\d+\) :status: 200", out.stdout)


def test_h2load_requests_all_succeed(cells: Cells) -> None:
    out = subprocess.run(
        ["h2load", "-n", "600", "-c", "4", "-m", "16", cells.url("h1", "/headers")],
        capture_output=True,
        timeout=60,
        check=True,
        text=True,
    )
    assert "600 succeeded, 0 failed, 0 errored, 0 timeout" in out.stdout, out.stdout
    assert "status codes: 600 2xx" in out.stdout


def test_drain_sends_two_goaways_and_finishes_streams_in_flight(cells: Cells) -> None:
    """nghttp (nghttp2) keeps a stream running after a graceful GOAWAY, as RFC 9113 §6.8
    allows; the h2 library in the client role cannot (python-hyper/h2#1181), so the frames
    are watched through nghttp's trace."""
    proc = subprocess.Popen(
        ["nghttp", "-nv", cells.url("h1", "/slow/3500")],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)  # the slow request is at the backend
    reload = cells.gateway.ctl("reload")
    assert reload.returncode == 0, reload.stderr
    out, _ = proc.communicate(timeout=30)
    goaways = re.findall(r"recv GOAWAY frame.*\n\s*\(last_stream_id=(\d+), error_code=(\w+)", out)
    assert goaways[0] == (str(2**31 - 1), "NO_ERROR"), out  # the first rejects nothing
    final = [int(last) for last, code in goaways[1:] if code == "NO_ERROR"]
    assert final and final[-1] == 13, out  # nghttp's request stream, the last processed
    response = out.index("recv (stream_id=13) :status: 200")
    assert out.index("recv GOAWAY") < response  # served after the first GOAWAY
    assert "recv DATA frame <length=4, flags=0x01, stream_id=13>" in out or (
        "recv DATA frame <length=0, flags=0x01, stream_id=13>" in out
    ), out
    assert proc.returncode == 0
    # A new connection is served by the new generation.
    with cells.client("h2") as fresh:
        assert fresh.get(cells.url("h1", "/headers")).status_code == 200


def test_a_lapse_ends_one_stream_not_the_connection(cells: Cells) -> None:
    """The total timeout lapses for one stream (504 on it); its sibling on the same HTTP/2
    connection is served."""
    results: dict[str, int] = {}

    async def main() -> None:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as client:

            async def get(name: str, path: str) -> None:
                r = await client.get(cells.url("short", path))
                assert r.http_version == "HTTP/2"
                results[name] = r.status_code

            async with trio.open_nursery() as nursery:
                nursery.start_soon(get, "slow", "/slow/3000")
                await trio.sleep(0.2)
                nursery.start_soon(get, "fast", "/headers")
                nursery.start_soon(get, "fast2", "/bytes/100000")

    trio.run(main)
    assert results == {"slow": 504, "fast": 200, "fast2": 200}


def _h2_get(sock: socket.socket, path: str, preface_parts: list[bytes]) -> int:
    """An HTTP/2 GET over ``sock`` with prior knowledge (the h2 library in the client role),
    the connection preface sent in ``preface_parts`` (pieces of it, 0.1 s apart); its status."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    opening = conn.data_to_send()
    assert opening.startswith(b"".join(preface_parts))
    for part in preface_parts:
        sock.sendall(part)
        time.sleep(0.1)
    authority = "gateway.test"
    headers = [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", authority)]
    conn.send_headers(1, headers, end_stream=True)
    sock.sendall(opening[len(b"".join(preface_parts)) :] + conn.data_to_send())
    status = 0
    while True:
        data = sock.recv(65536)
        assert data, "closed before the response ended"
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = int(dict(event.headers)[b":status"])
            if isinstance(event, h2.events.StreamEnded):
                return status
        sock.sendall(conn.data_to_send())


def test_first_bytes_that_come_after_the_accept_are_told_apart(cells: Cells) -> None:
    """A connection accepted before its first bytes came: the worker waits for them on its
    dispatcher (workers/http1/taskless.py) and serves HTTP/1.1 there, or hands HTTP/2's
    preface (whole or in pieces) to a task of the HTTP/2 front."""
    url = httpx.URL(cells.url("h1", "/headers"))
    address = (url.host, url.port)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    for parts in ([preface], [preface[:5], preface[5:]]):
        with socket.create_connection(address, timeout=10) as sock:
            time.sleep(0.2)  # accepted with nothing to read yet
            assert _h2_get(sock, "/headers", parts) == 200
    with socket.create_connection(address, timeout=10) as sock:
        time.sleep(0.2)
        sock.sendall(b"GET /headers HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ")
