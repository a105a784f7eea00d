"""Every deadline of the hot path still fires with its own meaning: total, upstream body idle,
keep-alive idle; and the pooled-parser / coalesced-write path keeps framing exact."""

from __future__ import annotations

import h11
import trio
from h1_peers import H11Client, raw_exchange, start_backend, start_proxy

from gateway.http.limits import HttpLimits, PoolLimits
from workers.http1 import Backend


async def test_total_timeout_is_504_and_not_held_against_the_backend(
    nursery: trio.Nursery,
) -> None:
    async def trickle(peer, req):  # a head, then body bytes slower than the total allows
        await peer.read_body()
        await peer.send(h11.Response(status_code=200, headers=[(b"content-length", b"100")]))
        for _ in range(100):
            await peer.send(h11.Data(data=b"x"))
            await trio.sleep(0.05)

    backend = await start_backend(nursery, trickle)
    limits = HttpLimits(total_timeout_ms=300, head_timeout_ms=5000, body_timeout_ms=5000)
    proxy = await start_proxy(nursery, [backend], limits)
    with trio.fail_after(5):
        data, closed = await raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 ") and closed  # the head was already relayed
    assert len(data.partition(b"\r\n\r\n")[2]) < 100  # ... and the body cut short
    assert proxy.records[-1].error_kind == "total_timeout"
    assert proxy.results == [("b0", True, "aborted")]  # neutral for passive health


async def test_total_timeout_before_any_response_is_504(nursery: trio.Nursery) -> None:
    async def silent(peer, req):
        await peer.read_body()
        await trio.sleep_forever()

    backend = await start_backend(nursery, silent)
    proxy = await start_proxy(nursery, [backend], HttpLimits(total_timeout_ms=200))
    with trio.fail_after(5):
        data, closed = await raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 504 ") and closed
    assert proxy.records[-1].error_kind == "total_timeout"


async def test_total_timeout_bounds_waiting_for_a_pool_slot(nursery: trio.Nursery) -> None:
    release = trio.Event()

    async def held(peer, req):
        await peer.read_body()
        await release.wait()
        await peer.respond(200, b"late")

    backend = await start_backend(nursery, held)
    limits = HttpLimits(
        total_timeout_ms=300, pool=PoolLimits(max_per_backend=1, connect_timeout_ms=5000)
    )
    proxy = await start_proxy(nursery, [backend], limits)
    first = await H11Client.open(proxy.port)
    await first.send(h11.Request(method="GET", target="/a", headers=[("host", "a")]))
    await first.send(h11.EndOfMessage())
    await trio.sleep(0.05)  # the first request holds the only upstream connection
    started_at = trio.current_time()
    with trio.fail_after(5):
        data, closed = await raw_exchange(proxy.port, b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 504 ") and closed
    assert trio.current_time() - started_at < 2.0  # not the 5 s pool-slot wait
    assert {r.path: r.error_kind for r in proxy.records}["/b"] == "total_timeout"
    release.set()


async def test_upstream_body_idle_closes_after_partial_body(nursery: trio.Nursery) -> None:
    async def stall(peer, req):
        await peer.read_body()
        await peer.send(h11.Response(status_code=200, headers=[(b"content-length", b"10")]))
        await peer.send(h11.Data(data=b"abc"))
        await trio.sleep_forever()

    backend = await start_backend(nursery, stall)
    proxy = await start_proxy(nursery, [backend], HttpLimits(body_timeout_ms=200))
    with trio.fail_after(5):
        data, closed = await raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\nabc") and closed
    assert proxy.records[-1].error_kind == "upstream_body_timeout"
    assert proxy.results == [("b0", False, "upstream_body_timeout")]


async def test_idle_keepalive_connection_is_closed_silently(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend], HttpLimits(header_timeout_ms=200))
    client = await H11Client.open(proxy.port)
    response, body, _ = await client.request(b"GET", b"/")
    assert response.status_code == 200 and body == b"echo:"
    with trio.fail_after(5):
        rest = await client.stream.receive_some(1000)
    assert rest == b""  # closed without a 408: nothing of a next request had arrived
    assert len(proxy.records) == 1


async def test_kept_parser_serves_many_requests_on_one_upstream(nursery: trio.Nursery) -> None:
    """Responses of every framing back to back on one pooled connection (whose parser is kept
    between exchanges), a HEAD among them, pipelined by the client."""

    async def varied(peer, req):
        body = await peer.read_body()
        if req.target == b"/chunked":
            await peer.send(h11.Response(status_code=200, headers=[]))
            await peer.send(h11.Data(data=b"ch" + body), h11.Data(data=b"unk"))
            await peer.send(h11.EndOfMessage(headers=[(b"x-trailer", b"1")]))
        elif req.method == b"HEAD":
            await peer.send(h11.Response(status_code=200, headers=[(b"content-length", b"5")]))
            await peer.send(h11.EndOfMessage())
        else:
            await peer.respond(200, b"len:" + body)

    backend = await start_backend(nursery, varied)
    proxy = await start_proxy(nursery, [backend])
    pipelined = (
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /chunked HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nX"
        b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
        b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    with trio.fail_after(5):
        data, closed = await raw_exchange(proxy.port, pipelined)
    assert closed
    assert data.count(b"HTTP/1.1 200 ") == 5
    assert b"3\r\nchX\r\n3\r\nunk\r\n0\r\nx-trailer: 1\r\n\r\n" in data
    assert b"len:hi" in data and data.endswith(b"len:")
    assert [r.status for r in proxy.records] == [200] * 5
    assert backend.connections <= 2  # HEAD may cost its parser, never the whole pool


async def test_http10_client_without_host_gets_backend_authority(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend])
    data, closed = await raw_exchange(proxy.port, b"GET /x HTTP/1.0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 ") and closed
    host = dict(backend.requests[0].headers)[b"host"]
    assert host == b"127.0.0.1:%d" % backend.port
    assert Backend("b0", "127.0.0.1", backend.port).authority == host
