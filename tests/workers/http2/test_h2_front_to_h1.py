"""The HTTP/2 front in front of HTTP/1.1 backends (h11): trailers both ways, early answers,
100-continue, per-stream failures that leave the connection serving."""

from __future__ import annotations

import h11
import trio
from h2_peers import BackendPeer, H2Client, start_backend, start_h2_proxy

from gateway.http.limits import HttpLimits


async def test_trailers_cross_h2_to_h1_both_ways(nursery: trio.Nursery) -> None:
    seen: dict[str, object] = {}

    async def handler(peer: BackendPeer, req: h11.Request) -> None:
        seen["body"] = await peer.read_body()
        seen["trailers"] = peer.trailers
        seen["headers"] = req.headers
        await peer.send(
            h11.Response(status_code=200, headers=[(b"transfer-encoding", b"chunked")]),
            h11.Data(data=b"resp"),
            h11.EndOfMessage(headers=[(b"x-resp-trailer", b"v2")]),
        )

    backend = await start_backend(nursery, handler)
    proxy = await start_h2_proxy(nursery, [backend])
    client = await H2Client.open(proxy.port)
    sid = await client.send_request(
        "/t",
        method="POST",
        body=b"abc",
        trailers=[("x-req-trailer", "v1")],
        headers=[("te", "trailers")],
    )
    head, body, trailers = await client.response(sid)
    assert head[b":status"] == b"200"
    assert body == b"resp"
    assert trailers == {b"x-resp-trailer": b"v2"}
    assert seen["body"] == b"abc"
    assert seen["trailers"] == [(b"x-req-trailer", b"v1")]
    # HTTP/1.1 backends get chunked framing and no te.
    names = [n for n, _ in seen["headers"]]  # type: ignore[attr-defined]
    assert b"transfer-encoding" in names
    assert b"te" not in names


async def test_backend_failure_ends_one_stream_and_the_connection_serves_on(
    nursery: trio.Nursery,
) -> None:
    async def handler(peer: BackendPeer, req: h11.Request) -> None:
        await peer.read_body()
        if req.target == b"/die":
            await peer.send(
                h11.Response(status_code=200, headers=[(b"content-length", b"100")]),
                h11.Data(data=b"partial"),
            )
            await peer.stream.aclose()  # the response is cut short
            return
        await peer.respond(200, b"fine")

    backend = await start_backend(nursery, handler)
    proxy = await start_h2_proxy(nursery, [backend])
    client = await H2Client.open(proxy.port)
    dead = await client.send_request("/die")
    head, body, _ = await client.response(dead)
    assert head[b":status"] == b"200"
    assert head[b"reset"] == b"2"  # INTERNAL_ERROR: truncated, never dressed up as complete
    assert body == b"partial"
    ok = await client.send_request("/ok")
    head, body, _ = await client.response(ok)
    assert (head[b":status"], body) == (b"200", b"fine")
    kinds = [r.error_kind for r in proxy.records]
    assert "upstream_truncated" in kinds


async def test_no_backend_is_503_on_that_stream(nursery: trio.Nursery) -> None:
    proxy = await start_h2_proxy(nursery, [])
    client = await H2Client.open(proxy.port)
    sid = await client.send_request("/x")
    head, body, _ = await client.response(sid)
    assert head[b":status"] == b"503"
    assert body.startswith(b"503")


async def test_body_over_the_cap_is_413_and_backend_sees_nothing_complete(
    nursery: trio.Nursery,
) -> None:
    got: list[bytes] = []

    async def handler(peer: BackendPeer, req: h11.Request) -> None:
        got.append(await peer.read_body())
        await peer.respond(200, b"x")

    backend = await start_backend(nursery, handler)
    proxy = await start_h2_proxy(nursery, [backend], limits=HttpLimits(max_body_bytes=1000))
    client = await H2Client.open(proxy.port)
    sid = await client.send_request("/up", method="POST", body=b"z" * 5000)
    head, _, _ = await client.response(sid)
    assert head[b":status"] == b"413"
    assert got == []  # the truncated upload never reached a complete request
