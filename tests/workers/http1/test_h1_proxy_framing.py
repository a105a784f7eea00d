"""Framing through the proxy: chunked, trailers, HEAD/204/304, 100-continue, HTTP/1.0, caps."""

from __future__ import annotations

import h11
import pytest
import trio
from h1_peers import H11Client, raw_exchange, start_backend, start_proxy

from gateway.http.limits import HttpLimits


async def test_chunked_up_and_down_with_trailers(nursery: trio.Nursery) -> None:
    got = {}

    async def handler(peer, req):
        got["te"] = dict(req.headers).get(b"transfer-encoding")
        got["body"] = await peer.read_body()
        got["trailers"] = peer.trailers
        await peer.send(h11.Response(status_code=200, headers=[(b"transfer-encoding", b"chunked")]))
        for part in (b"ab", b"cd", b"ef"):
            await peer.send(h11.Data(data=part))
        await peer.send(h11.EndOfMessage(headers=[(b"x-checksum", b"42")]))

    backend = await start_backend(nursery, handler)
    proxy = await start_proxy(nursery, [backend])
    client = await H11Client.open(proxy.port)
    await client.send(
        h11.Request(
            method=b"POST",
            target=b"/",
            headers=[(b"host", b"a"), (b"transfer-encoding", b"chunked")],
        ),
        h11.Data(data=b"hello "),
        h11.Data(data=b"world"),
        h11.EndOfMessage(headers=[(b"x-req-trailer", b"yes")]),
    )
    response, body, trailers = await client.read_response()
    assert got == {
        "te": b"chunked",
        "body": b"hello world",
        "trailers": [(b"x-req-trailer", b"yes")],
    }
    assert response.status_code == 200
    assert dict(response.headers)[b"transfer-encoding"] == b"chunked"
    assert body == b"abcdef"
    assert trailers == [(b"x-checksum", b"42")]


async def test_head_204_304_framing_keeps_connection_usable(nursery: trio.Nursery) -> None:
    async def handler(peer, req):
        await peer.read_body()
        if req.target == b"/head":
            await peer.send(h11.Response(status_code=200, headers=[(b"content-length", b"1234")]))
            await peer.send(h11.EndOfMessage())
        elif req.target == b"/204":
            await peer.send(h11.Response(status_code=204, headers=[]), h11.EndOfMessage())
        else:
            await peer.send(
                h11.Response(
                    status_code=304, headers=[(b"etag", b'"x"'), (b"content-length", b"99")]
                ),
                h11.EndOfMessage(),
            )

    backend = await start_backend(nursery, handler)
    proxy = await start_proxy(nursery, [backend])
    client = await H11Client.open(proxy.port)
    response, body, _ = await client.request(b"HEAD", b"/head")
    assert response.status_code == 200 and body == b""
    assert dict(response.headers)[b"content-length"] == b"1234"
    response, body, _ = await client.request(b"GET", b"/204")
    assert response.status_code == 204 and body == b""
    response, body, _ = await client.request(b"GET", b"/304")
    assert response.status_code == 304 and body == b""
    response, body, _ = await client.request(b"HEAD", b"/head")
    assert response.status_code == 200
    assert backend.connections == 1  # every exchange left the upstream clean enough to pool


async def test_expect_100_continue(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend])
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    await stream.send_all(
        b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    )
    with trio.fail_after(5):
        interim = await stream.receive_some(100)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    await stream.send_all(b"12345")
    data = b""
    with trio.fail_after(5):
        while b"echo:12345" not in data:
            data += await stream.receive_some(1000)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"expect" not in [bytes(n).lower() for n, _ in backend.requests[0].headers]
    await stream.aclose()


async def test_http10_client_gets_close_and_raw_body(nursery: trio.Nursery) -> None:
    async def handler(peer, req):
        await peer.read_body()
        await peer.send(h11.Response(status_code=200, headers=[(b"transfer-encoding", b"chunked")]))
        await peer.send(h11.Data(data=b"abc"), h11.EndOfMessage())

    backend = await start_backend(nursery, handler)
    proxy = await start_proxy(nursery, [backend])
    data, closed = await raw_exchange(proxy.port, b"GET / HTTP/1.0\r\n\r\n")
    assert closed
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert b"transfer-encoding" not in head.lower()
    assert body == b"abc"


@pytest.mark.parametrize(
    "first",
    [
        b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET /a HTTP/1.0\r\n\r\n",
    ],
    ids=["http11_connection_close", "http10"],
)
async def test_request_pipelined_behind_a_close_is_not_served_and_spoils_nothing(
    nursery: trio.Nursery, first: bytes
) -> None:
    """RFC 9112 §9.6: after a request that closes the connection, no further request on it
    is processed; the one before is answered in full (it was a 400: llhttp refuses the
    bytes after it, in the same read)."""
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend])
    data, closed = await raw_exchange(proxy.port, first + b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
    assert closed
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"echo:")
    assert data.count(b"HTTP/1.1 ") == 1
    assert [r.target for r in backend.requests] == [b"/a"]
    assert [(r.path, r.status) for r in proxy.records] == [("/a", 200)]


async def test_malformed_request_pipelined_behind_a_good_one_is_answered_after_it(
    nursery: trio.Nursery,
) -> None:
    """The good request is answered first, then the malformed one gets its 400 and the
    close (it was a 400 for the good one: the parse error came in the same read)."""
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend])
    data, closed = await raw_exchange(
        proxy.port, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHo st: a\r\n\r\n"
    )
    assert closed
    first, _, rest = data.partition(b"echo:")
    assert first.startswith(b"HTTP/1.1 200 ")
    assert rest.startswith(b"HTTP/1.1 400 ")
    assert [r.target for r in backend.requests] == [b"/a"]
    assert [r.status for r in proxy.records] == [200, 400]


async def test_keepalive_cap_closes_on_nth_response(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend], HttpLimits(max_keepalive_requests=3))
    client = await H11Client.open(proxy.port)
    for i in range(3):
        response, _, _ = await client.request(b"GET", b"/")
        closing = (b"connection", b"close") in list(response.headers)
        assert closing == (i == 2)
    with trio.fail_after(5):
        assert await client.stream.receive_some(10) == b""


async def test_request_body_over_cap_is_413(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend], HttpLimits(max_body_bytes=1000))
    data, closed = await raw_exchange(
        proxy.port, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n"
    )
    assert data.startswith(b"HTTP/1.1 413 ") and closed
    chunked = (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        + (b"200\r\n" + b"x" * 0x200 + b"\r\n") * 3
    )
    data, closed = await raw_exchange(proxy.port, chunked)
    assert data.startswith(b"HTTP/1.1 413 ") and closed
    assert backend.requests == [] or all(r.method == b"POST" for r in backend.requests)


async def test_header_section_over_cap_is_431(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend], HttpLimits(max_header_bytes=4096))
    big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n"
    data, closed = await raw_exchange(proxy.port, big)
    assert data.startswith(b"HTTP/1.1 431 ") and closed
    many = (
        b"GET / HTTP/1.1\r\nHost: a\r\n"
        + b"".join(b"X-%d: 1\r\n" % i for i in range(300))
        + b"\r\n"
    )
    data, closed = await raw_exchange(proxy.port, many)
    assert data.startswith(b"HTTP/1.1 431 ") and closed
    assert backend.requests == []
