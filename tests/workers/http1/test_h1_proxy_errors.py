"""Smuggling rejections, upstream failures (502/503/504), timeouts and retries."""

from __future__ import annotations

import pytest
import trio
from h1_peers import H11Client, raw_exchange, start_backend, start_proxy

from gateway.http.limits import HttpLimits, PoolLimits
from workers.http1 import Backend

SMUGGLING = {
    "cl_te": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_not_final_chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "te_gzip": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
    "te_xchunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te_space_before_colon": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "te_duplicate": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "cl_duplicate_same": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "cl_differing": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "cl_non_digit": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
    "obs_fold": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n b\r\n\r\n",
    "bare_lf": b"GET / HTTP/1.1\nHost: a\n\n",
    "bad_chunk_size": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "no_host": b"GET / HTTP/1.1\r\n\r\n",
    "two_hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "host_comma": b"GET / HTTP/1.1\r\nHost: a,b\r\n\r\n",
    "underscore": b"GET / HTTP/1.1\r\nHost: a\r\nX_Auth: 1\r\n\r\n",
    "te_in_http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "upgrade_with_body": b"POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\nabc",
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
async def test_smuggling_vectors_get_400_and_close(nursery: trio.Nursery, name: str) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend])
    data, closed = await raw_exchange(
        proxy.port, SMUGGLING[name] + b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    assert data.startswith(b"HTTP/1.1 400 "), data[:80]
    assert data.count(b"HTTP/1.1") == 1  # the pipelined request was never served
    assert closed
    assert backend.requests == []


async def test_strict_te_rejects_anything_but_chunked(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend], HttpLimits(strict_te=True))
    data, closed = await raw_exchange(
        proxy.port, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n"
    )
    assert data.startswith(b"HTTP/1.1 400 ") and closed


async def test_underscore_drop_policy_forwards_without_the_field(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend], HttpLimits(underscore_policy="drop"))
    client = await H11Client.open(proxy.port)
    response, _, _ = await client.request(
        b"GET", b"/", headers=[(b"x_auth", b"1"), (b"x-ok", b"2")]
    )
    assert response.status_code == 200
    names = [bytes(n) for n, _ in backend.requests[0].headers]
    assert b"x_auth" not in names and b"x-ok" in names


async def test_no_backend_is_503(nursery: trio.Nursery) -> None:
    proxy = await start_proxy(nursery, [])
    data, closed = await raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 503 ") and closed


async def test_refused_backend_is_502_after_bounded_retries(nursery: trio.Nursery) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    proxy = await start_proxy(nursery, [Backend("dead", "127.0.0.1", port)])
    data, closed = await raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 502 ") and closed
    assert [r[2] for r in proxy.results] == ["connect_failed"] * 3


async def test_connect_failure_retries_next_backend(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    dead_port = sock.getsockname()[1]
    sock.close()
    proxy = await start_proxy(
        nursery,
        [Backend("dead", "127.0.0.1", dead_port), Backend("live", "127.0.0.1", backend.port)],
    )
    client = await H11Client.open(proxy.port)
    response, body, _ = await client.request(b"POST", b"/", body=b"z")
    assert response.status_code == 200 and body == b"echo:z"
    assert proxy.results[0][:2] == ("dead", False)


async def test_silent_backend_is_504_on_head_timeout(nursery: trio.Nursery) -> None:
    async def handler(peer, req):
        await peer.read_body()
        await trio.sleep_forever()

    backend = await start_backend(nursery, handler)
    proxy = await start_proxy(nursery, [backend], HttpLimits(head_timeout_ms=200))
    with trio.fail_after(5):
        data, closed = await raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 504 ") and closed
    assert proxy.records[-1].error_kind == "head_timeout"


async def test_slowloris_head_gets_408_and_close(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend], HttpLimits(header_timeout_ms=200))
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
    with trio.fail_after(5):
        data = b""
        while chunk := await stream.receive_some(1000):
            data += chunk
    assert data.startswith(b"HTTP/1.1 408 ")


async def test_slow_post_body_idle_timeout(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend], HttpLimits(body_timeout_ms=200))
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    await stream.send_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
    with trio.fail_after(5):
        data = b""
        while chunk := await stream.receive_some(1000):
            data += chunk
    assert data.startswith(b"HTTP/1.1 408 ")
    assert proxy.records[-1].error_kind == "body_timeout"


async def test_stale_pooled_connection_is_retried_for_get(nursery: trio.Nursery) -> None:
    async def close_after_each(peer, req):
        await peer.read_body()
        await peer.respond(200, b"ok")
        await trio.sleep(0.01)
        await peer.stream.aclose()  # keep-alive promised, then dropped: a stale pooled conn

    backend = await start_backend(nursery, close_after_each)
    proxy = await start_proxy(nursery, [backend])
    client = await H11Client.open(proxy.port)
    for _ in range(3):
        response, body, _ = await client.request(b"GET", b"/")
        assert response.status_code == 200 and body == b"ok"
        await trio.sleep(0.05)
    assert backend.connections == 3


async def test_upstream_truncated_body_closes_client(nursery: trio.Nursery) -> None:
    async def handler(peer, req):
        await peer.read_body()
        await peer.stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        await peer.stream.aclose()

    backend = await start_backend(nursery, handler)
    proxy = await start_proxy(nursery, [backend])
    data, closed = await raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"abc") and closed
    assert proxy.records[-1].error_kind == "upstream_truncated"


async def test_upstream_smuggling_response_is_502(nursery: trio.Nursery) -> None:
    async def handler(peer, req):
        await peer.read_body()
        await peer.stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )

    backend = await start_backend(nursery, handler)
    proxy = await start_proxy(nursery, [backend], HttpLimits(pool=PoolLimits(max_attempts=1)))
    data, closed = await raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 502 ") and closed


async def test_reused_connection_dropped_mid_request_is_retried_once(nursery: trio.Nursery) -> None:
    async def first_only(peer, req):
        await peer.read_body()
        served = getattr(peer, "served", 0)
        peer.served = served + 1
        if served:
            await peer.stream.aclose()  # read the request, then die without a byte
            return
        await peer.respond(200, b"ok")

    backend = await start_backend(nursery, first_only)
    proxy = await start_proxy(nursery, [backend])
    client = await H11Client.open(proxy.port)
    for _ in range(2):
        response, body, _ = await client.request(b"GET", b"/")
        assert response.status_code == 200 and body == b"ok"
    assert backend.connections == 2  # the second GET was replayed on a fresh connection
    response, _, _ = await client.request(b"POST", b"/", body=b"x")
    assert response.status_code == 502  # not replayable: it carried a body


async def test_pipelined_requests_are_answered_in_order(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend])
    pipelined = b"".join(
        b"POST /%d HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n%d" % (i, i) for i in range(5)
    )
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    await stream.send_all(pipelined + b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    data = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some(65536):
            data += chunk
    bodies = [part.split(b"\r\n\r\n", 1)[1][:6] for part in data.split(b"HTTP/1.1 ")[1:]]
    assert bodies == [b"echo:%d" % i for i in range(5)] + [b"echo:"]
