"""The h2 back adapter under the proxy core, with the HTTP/2 front in process (the H2→H2
cell before the listener wiring): trailers both ways, a backend GOAWAY retried by the core
on a fresh connection, a backend reset mid-body ending one client stream only."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from h2.errors import ErrorCodes
from h2_backends import RawConn, RawStream, raw_h2_server, wait_until
from hyperframe.frame import GoAwayFrame

from gateway.http.limits import H2Limits, HttpLimits
from workers.http.context import ProxyContext
from workers.http.front import ClientConn
from workers.http.h2_back import H2Back
from workers.http.h2_front import serve_h2_connection
from workers.http1 import Backend, RequestRecord

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "http2"))
from h2_peers import H2Client


@asynccontextmanager
async def h2_proxy_to(
    port: int, limits: HttpLimits | None = None
) -> AsyncIterator[tuple[int, list[RequestRecord]]]:
    """HTTP/2 front → core → H2Back → the backend on ``port``; yields (proxy port, records)."""
    backend = Backend("h2-backend", "127.0.0.1", port)
    limits = limits or HttpLimits()
    back = H2Back(limits)
    records: list[RequestRecord] = []
    ctx = ProxyContext(
        listener="test",
        pick_backend=lambda head, client, tried=(): backend,
        back_for={backend.id: back},
        limits=limits,
        on_request_done=records.append,
    )

    async def handle(stream: trio.SocketStream) -> None:
        await serve_h2_connection(ClientConn(stream, "127.0.0.1"), ctx, H2Limits())

    async with trio.open_nursery() as nursery:
        await nursery.start(back.serve)
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, handle, listeners)
        try:
            yield listeners[0].socket.getsockname()[1], records
        finally:
            await back.aclose()
            nursery.cancel_scope.cancel()


async def test_trailers_cross_h2_to_h2_both_ways() -> None:
    async def script(conn: RawConn, rs: RawStream) -> None:
        conn.h2.send_headers(rs.id, [(b":status", b"200")])
        conn.h2.send_data(rs.id, b"got " + bytes(rs.body))
        conn.h2.send_headers(rs.id, [(b"x-resp-trailer", b"v2")], end_stream=True)
        await conn.flush()

    async with raw_h2_server(script) as (port, record), h2_proxy_to(port) as (proxy, _):
        client = await H2Client.open(proxy)
        sid = await client.send_request(
            "/t",
            method="POST",
            body=b"abc",
            trailers=[("x-req-trailer", "v1")],
            headers=[("te", "trailers")],
        )
        head, body, trailers = await client.response(sid)
        assert (head[b":status"], body) == (b"200", b"got abc")
        assert trailers == {b"x-resp-trailer": b"v2"}
        (rs,) = record.streams
        assert rs.trailers == [(b"x-req-trailer", b"v1")]
        assert (b"te", b"trailers") in rs.headers


async def test_streams_a_backend_goaway_refused_are_retried_on_a_new_connection() -> None:
    async def script(conn: RawConn, rs: RawStream) -> None:
        path = dict(rs.headers)[b":path"]
        if conn.index > 1:
            await conn.respond(rs.id, b"retried")
        elif path == b"/warm":
            await conn.respond(rs.id, b"warm")
        elif path == b"/a":
            await wait_until(conn.record, lambda: len(conn.streams) == 4)
            await conn.flush(GoAwayFrame(0, last_stream_id=rs.id, error_code=0).serialize())
            await trio.sleep(0.05)
            await conn.respond(rs.id, b"first")

    async with raw_h2_server(script) as (port, record), h2_proxy_to(port) as (proxy, records):
        client = await H2Client.open(proxy)
        # One answered request first: the pool's connection is up (SETTINGS exchanged), so
        # the next three share it however slowly this machine runs.
        head, warm, _ = await client.response(await client.send_request("/warm"))
        assert (head[b":status"], warm) == (b"200", b"warm")
        sids = []
        for path in ("/a", "/b", "/c"):
            sids.append(await client.send_request(path))
            await trio.sleep(0.02)
        answers = [await client.response(sid) for sid in sids]
        assert [(h[b":status"], b) for h, b, _ in answers] == [
            (b"200", b"first"),
            (b"200", b"retried"),
            (b"200", b"retried"),
        ]
        assert record.connections == 2
        assert [r.status for r in records] == [200] * 4


def _refuse_the_first_stream() -> tuple[list[int], Callable[[RawConn, RawStream], Awaitable[None]]]:
    refused: list[int] = []

    async def script(conn: RawConn, rs: RawStream) -> None:
        if not refused:  # the whole body arrived, then the backend refuses it unprocessed
            refused.append(len(rs.body))
            conn.h2.reset_stream(rs.id, error_code=ErrorCodes.REFUSED_STREAM)
            await conn.flush()
            return
        await conn.respond(rs.id, b"got %d %s" % (len(rs.body), hashlib.sha256(rs.body).digest()))

    return refused, script


async def test_a_body_refused_unprocessed_is_replayed_whole_on_the_retry() -> None:
    body = bytes(range(256)) * 60  # 15 KiB: sent (and taken from the client) before the refusal
    refused, script = _refuse_the_first_stream()
    async with raw_h2_server(script) as (port, record), h2_proxy_to(port) as (proxy, records):
        client = await H2Client.open(proxy)
        head, answer, _ = await client.response(
            await client.send_request("/grpc-like", method="POST", body=body)
        )
        assert refused == [len(body)]
        assert (head[b":status"], answer) == (
            b"200",
            b"got %d %s" % (len(body), hashlib.sha256(body).digest()),
        )
        assert [len(rs.body) for rs in record.streams] == [len(body), len(body)]
        assert [(r.status, r.bytes_in) for r in records] == [(200, len(body))]


async def test_a_body_past_the_replay_cap_is_not_retried_after_a_refusal() -> None:
    refused, script = _refuse_the_first_stream()
    limits = HttpLimits(retry_buffer_bytes=1024)
    async with raw_h2_server(script) as (port, record), h2_proxy_to(port, limits) as (proxy, _):
        client = await H2Client.open(proxy)
        head, _, _ = await client.response(
            await client.send_request("/big", method="POST", body=bytes(15 * 1024))
        )
        assert refused == [15 * 1024]
        assert head[b":status"] == b"502"
        assert len(record.streams) == 1  # never offered again: the body was not kept


async def test_backend_reset_mid_body_resets_that_client_stream_only() -> None:
    async def script(conn: RawConn, rs: RawStream) -> None:
        path = dict(rs.headers)[b":path"]
        if path == b"/die":
            await conn.respond(rs.id, b"partial", end=False)
            await trio.sleep(0.05)
            conn.h2.reset_stream(rs.id, error_code=2)
            await conn.flush()
        else:
            await conn.respond(rs.id, b"fine")

    async with raw_h2_server(script) as (port, _record), h2_proxy_to(port) as (proxy, records):
        client = await H2Client.open(proxy)
        head, body, _ = await client.response(await client.send_request("/die"))
        assert b"reset" in head  # never dressed up as a complete body
        head, body, _ = await client.response(await client.send_request("/ok"))
        assert (head[b":status"], body) == (b"200", b"fine")
        assert "upstream_reset" in [r.error_kind for r in records]
