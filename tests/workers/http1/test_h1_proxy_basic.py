"""Proxy behaviour with h11 as client and backend over loopback TCP."""

from __future__ import annotations

import trio
from h1_peers import H11Client, start_backend, start_proxy


async def test_get_roundtrip_and_forwarding_headers(nursery: trio.Nursery) -> None:
    seen = {}

    async def handler(peer, req):
        seen.update({bytes(n): bytes(v) for n, v in req.headers})
        await peer.read_body()
        await peer.respond(200, b"hello", [(b"x-up", b"1")])

    backend = await start_backend(nursery, handler)
    proxy = await start_proxy(nursery, [backend])
    client = await H11Client.open(proxy.port)
    response, body, _ = await client.request(b"GET", b"/a?b=1")
    assert response.status_code == 200
    assert body == b"hello"
    assert (b"x-up", b"1") in list(response.headers)
    assert seen[b"x-forwarded-for"] == b"127.0.0.1"
    assert seen[b"x-forwarded-proto"] == b"http"
    assert seen[b"x-forwarded-host"] == b"example.test"
    assert seen[b"via"] == b"1.1 expressgateway"
    assert len(seen[b"traceparent"]) == 55
    await client.aclose()
    await trio.sleep(0.05)
    assert proxy.records[0].status == 200 and proxy.records[0].backend_id == "b0"


async def test_keepalive_reuses_one_backend_connection(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend])
    client = await H11Client.open(proxy.port)
    for i in range(10):
        response, body, _ = await client.request(b"POST", b"/p", body=b"x%d" % i)
        assert response.status_code == 200
        assert body == b"echo:x%d" % i
    await client.aclose()
    assert backend.connections == 1
    assert len(backend.requests) == 10
