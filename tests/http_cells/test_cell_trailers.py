"""Response trailers cross every cell whose two sides can carry them: an HTTP/2 backend
(hypercorn sends trailers to a request that says ``te: trailers``) to HTTP/1.1 clients
(chunked trailer section) and HTTP/2 clients (a final HEADERS frame). The H1 backend side is
covered in process (tests/workers/http1 and http2), with h11 backends."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import h11
import trio
from cells import Cells

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workers" / "http2"))
from h2_peers import H2Client


def test_h2_backend_trailers_reach_an_h1_client(cells: Cells) -> None:
    conn = h11.Connection(h11.CLIENT)
    with socket.create_connection(("127.0.0.1", cells.ports["h2"]), timeout=10) as sock:
        request = h11.Request(
            method="GET",
            target="/trailers",
            headers=[("host", "cells"), ("te", "trailers")],
        )
        sock.sendall(conn.send(request) + conn.send(h11.EndOfMessage()))
        events = []
        while not events or not isinstance(events[-1], h11.EndOfMessage):
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
                continue
            events.append(event)
    response = events[0]
    assert isinstance(response, h11.Response) and response.status_code == 200
    assert (b"transfer-encoding", b"chunked") in list(response.headers)
    body = b"".join(bytes(e.data) for e in events if isinstance(e, h11.Data))
    assert body == b"with trailers"
    assert list(events[-1].headers) == [(b"x-checksum", b"abc123")]


def test_h2_backend_trailers_reach_an_h2_client(cells: Cells) -> None:
    async def main() -> tuple[dict[bytes, bytes], bytes, dict[bytes, bytes]]:
        client = await H2Client.open(cells.ports["h2"])
        sid = await client.send_request("/trailers", headers=[("te", "trailers")])
        return await client.response(sid)

    head, body, trailers = trio.run(main)
    assert head[b":status"] == b"200"
    assert body == b"with trailers"
    assert trailers == {b"x-checksum": b"abc123"}
