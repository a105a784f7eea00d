"""Issue 17 on the HTTP/1.1 path, each item as the attack or fault it names, against real
peers on loopback: the outcome the client sees, and a neighbour on the same worker that is
served meanwhile."""

from __future__ import annotations

import socket
import struct

import h11
import pytest
import trio
from h1_peers import H11Client, start_backend, start_proxy

from gateway.http.limits import HttpLimits, PoolLimits

FILLER = b"a" * 65536


async def _read_until_close(stream: trio.abc.Stream, timeout_s: float = 10.0) -> bytes:
    data = b""
    with trio.fail_after(timeout_s):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            data += chunk
    return data


async def _flood(stream: trio.abc.Stream, head: bytes, limit_bytes: int, sent: list[int]) -> None:
    """Send ``head`` then filler without a line end until the peer stops taking it."""
    try:
        await stream.send_all(head)
        while sent[0] < limit_bytes:
            await stream.send_all(FILLER)
            sent[0] += len(FILLER)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def _neighbour_is_served(port: int) -> None:
    client = await H11Client.open(port)
    with trio.fail_after(5):
        response, body, _ = await client.request(b"GET", b"/neighbour")
    assert response.status_code == 200 and body == b"echo:"
    await client.aclose()


# ---- item 1: unbounded trailer field / chunk line -------------------------------------------

_CHUNKED_HEAD = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "opening",
    [
        pytest.param(b"3\r\nabc\r\n0\r\nX-T: ", id="trailer_value"),
        pytest.param(b"0\r\nX-Trailer-Name-Without-Colon", id="trailer_name"),
        pytest.param(b"3;ext=", id="chunk_extension"),
    ],
)
async def test_endless_trailer_or_chunk_line_is_431_and_close(
    nursery: trio.Nursery, opening: bytes
) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend])
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    sent = [0]
    async with trio.open_nursery() as attack:
        attack.start_soon(_flood, stream, _CHUNKED_HEAD + opening, 32 * 1024 * 1024, sent)
        await _neighbour_is_served(proxy.port)
        data = await _read_until_close(stream)
        attack.cancel_scope.cancel()
    assert data.startswith(b"HTTP/1.1 431 "), data[:80]
    # Bounded like a head: max_header_bytes plus at most one read (and kernel buffers).
    assert sent[0] < 8 * 1024 * 1024
    assert proxy.records[-1].status == 431
    await _neighbour_is_served(proxy.port)


async def test_too_many_trailer_fields_is_431(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend], HttpLimits(max_headers=8))
    trailers = b"".join(b"X-T%d: v\r\n" % i for i in range(9))
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    await stream.send_all(_CHUNKED_HEAD + b"3\r\nabc\r\n0\r\n" + trailers + b"\r\n")
    data = await _read_until_close(stream)
    assert data.startswith(b"HTTP/1.1 431 "), data[:80]
    await _neighbour_is_served(proxy.port)


async def test_endless_response_trailer_is_502(nursery: trio.Nursery) -> None:
    async def handler(peer, req):
        await peer.read_body()
        await peer.stream.send_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: "
        )
        try:
            for _ in range(512):  # 32 MiB unless the proxy stops reading
                await peer.stream.send_all(FILLER)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    backend = await start_backend(nursery, handler)
    proxy = await start_proxy(nursery, [backend], HttpLimits(pool=PoolLimits(max_attempts=1)))
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    data = await _read_until_close(stream)
    # The head and body went out before the trailer: the client sees no terminator.
    assert data.startswith(b"HTTP/1.1 200 ") and not data.endswith(b"0\r\n\r\n")
    assert proxy.records[-1].error_kind == "upstream_headers_too_large"
