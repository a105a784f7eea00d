"""What an HTTP/1.1 connection leaves behind when it ends, on either side: nothing for
Python's cyclic collector. A reader's parser calls back into the reader (a reference cycle);
``MessageReader.release`` breaks it when the connection closes, so a worker whose clients
reconnect does not run a collection every few connections (issue 18). Real h11 peers."""

from __future__ import annotations

import collections
import gc
from collections.abc import Iterator

import h11
import pytest
import trio
from h1_peers import BackendPeer, H11Client, start_backend, start_proxy

CONNECTIONS = 50


@pytest.fixture
def saved_garbage() -> Iterator[list[object]]:
    """Whatever the collector finds unreachable while the test runs, kept for inspection."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _kinds(garbage: list[object]) -> collections.Counter[str]:
    return collections.Counter(type(o).__qualname__ for o in garbage)


async def _connections_of_two_requests(port: int) -> None:
    for _ in range(CONNECTIONS):
        client = await H11Client.open(port)
        for _ in range(2):
            response, _, _ = await client.request(b"GET", b"/")
            assert response.status_code == 200
        await client.aclose()
    await trio.sleep(0.05)  # the proxy's side of the last connection ends


async def test_client_connections_leave_no_cycles(
    nursery: trio.Nursery, saved_garbage: list[object]
) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend])
    await _connections_of_two_requests(proxy.port)
    gc.collect()
    kinds = _kinds(saved_garbage)
    # Before the release: a MessageReader, its parser, callbacks, events, stream and ~16
    # objects in all per connection.
    assert kinds["MessageReader"] == 0, kinds.most_common(8)
    assert len(saved_garbage) < CONNECTIONS, kinds.most_common(8)
    # ... and nothing keeps an ended connection alive: the deadline watch's heap holds each
    # retired deadline until its entry comes due (a taskless connection's deadline held it
    # whole, its reader and buffers included, for the keep-alive timeout).
    alive = _kinds([o for o in gc.get_objects() if type(o).__qualname__ == "ClientConnection"])
    assert alive["ClientConnection"] == 0


async def _closing_handler(peer: BackendPeer, req: h11.Request) -> None:
    await peer.read_body()
    await peer.respond(200, b"bye", [(b"connection", b"close")])


async def test_upstream_connections_closed_by_the_pool_leave_no_cycles(
    nursery: trio.Nursery, saved_garbage: list[object]
) -> None:
    backend = await start_backend(nursery, _closing_handler)
    proxy = await start_proxy(nursery, [backend])
    await _connections_of_two_requests(proxy.port)
    assert backend.connections == 2 * CONNECTIONS  # every upstream connection was closed
    gc.collect()
    kinds = _kinds(saved_garbage)
    assert kinds["MessageReader"] == 0, kinds.most_common(8)
    assert len(saved_garbage) < CONNECTIONS, kinds.most_common(8)
