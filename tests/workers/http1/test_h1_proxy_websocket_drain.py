"""WebSocket over Upgrade through the proxy (trio-websocket both ends) and drain behaviour."""

from __future__ import annotations

import pytest
import trio
import trio_websocket
from h1_peers import H11Client, gated_handler, start_backend, start_proxy, start_ws_echo_backend

from gateway.http.limits import HttpLimits, WebSocketLimits


async def test_websocket_echo_through_proxy(nursery: trio.Nursery) -> None:
    proxy = await start_proxy(nursery, [await start_ws_echo_backend(nursery)])
    async with trio_websocket.open_websocket("127.0.0.1", proxy.port, "/chat", use_ssl=False) as ws:
        for msg in ("hello", "x" * 100_000, b"\x00\x01binary"):
            await ws.send_message(msg)
            assert await ws.get_message() == msg
    await trio.sleep(0.05)
    assert proxy.records[-1].status == 101


async def test_websocket_idle_timeout_sends_1001(nursery: trio.Nursery) -> None:
    limits = HttpLimits(websocket=WebSocketLimits(idle_timeout_s=0.3))
    proxy = await start_proxy(nursery, [await start_ws_echo_backend(nursery)], limits)
    async with trio_websocket.open_websocket("127.0.0.1", proxy.port, "/", use_ssl=False) as ws:
        with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await ws.get_message()
    assert closed.value.reason.code == 1001


async def test_client_ping_flood_is_closed_with_1008(nursery: trio.Nursery) -> None:
    limits = HttpLimits(websocket=WebSocketLimits(max_pings_per_window=3, ping_window_s=10.0))
    proxy = await start_proxy(nursery, [await start_ws_echo_backend(nursery)], limits)
    async with trio_websocket.open_websocket("127.0.0.1", proxy.port, "/", use_ssl=False) as ws:
        for i in range(3):
            await ws.ping(b"%d" % i)  # answered (the backend's pong came back)
        async with trio.open_nursery() as pinging:
            pinging.start_soon(ws.ping, b"one too many")  # its pong never comes back
            with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.get_message()
            pinging.cancel_scope.cancel()
    assert closed.value.reason.code == 1008
    await trio.sleep(0.05)
    assert proxy.records[-1].error_kind == "ws_ping_flood"


async def test_websocket_refused_by_backend_is_502(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)  # plain HTTP: answers 200, not 101
    proxy = await start_proxy(nursery, [backend])
    with pytest.raises(trio_websocket.HandshakeError):
        async with trio_websocket.open_websocket("127.0.0.1", proxy.port, "/", use_ssl=False):
            pass


async def test_drain_closes_tunnel_with_1001_at_deadline(nursery: trio.Nursery) -> None:
    proxy = await start_proxy(nursery, [await start_ws_echo_backend(nursery)])
    async with trio_websocket.open_websocket("127.0.0.1", proxy.port, "/", use_ssl=False) as ws:
        await ws.send_message("before")
        assert await ws.get_message() == "before"
        proxy.ctx.start_drain(0.3)
        await ws.send_message("during grace")
        assert await ws.get_message() == "during grace"  # still relayed until the deadline
        with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await ws.get_message()
    assert closed.value.reason.code == 1001


async def test_drain_closes_idle_keepalive_and_marks_active_response(nursery: trio.Nursery) -> None:
    gate = trio.Event()
    backend = await start_backend(nursery, gated_handler(gate))
    proxy = await start_proxy(nursery, [backend])
    idle = await H11Client.open(proxy.port)
    response, _, _ = await idle.request(b"GET", b"/")
    assert (b"connection", b"close") not in list(response.headers)
    active = await H11Client.open(proxy.port)
    result = {}

    async def slow_request() -> None:
        result["response"] = await active.request(b"GET", b"/slow")

    async with trio.open_nursery() as inner:
        inner.start_soon(slow_request)
        await trio.sleep(0.1)
        proxy.ctx.start_drain(5.0)
        with trio.fail_after(2):
            assert await idle.stream.receive_some(10) == b""  # idle keep-alive closed at once
        gate.set()
    response, body, _ = result["response"]
    assert body == b"ok" and (b"connection", b"close") in list(response.headers)
