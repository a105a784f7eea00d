"""WebSocket over HTTP/2 (RFC 8441) through the HTTP/2 front: an h2 + wsproto client opens
extended CONNECT streams; the backends are trio-websocket over HTTP/1.1 (a real Upgrade
handshake) and hypercorn over h2c (extended CONNECT onward)."""

from __future__ import annotations

import base64
import os

import h2.errors
import h2.settings
import trio
from ws_h2_peers import (
    H2WsClient,
    StreamGone,
    hypercorn_ws_backend,
    start_ws_backend,
    start_ws_proxy,
)
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from gateway.http.limits import H2Limits, HttpLimits, WebSocketLimits
from gateway.http.ws_bridge import accept_for
from tools.ports import free_port

_ENABLE_CONNECT = h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL
MIB = 1 << 20


async def _message(client: H2WsClient, sid: int) -> str | bytes:
    """One whole message (wsproto may hand it over in pieces)."""
    parts: list[str | bytes] = []
    while True:
        event = await client.next_event(sid)
        assert isinstance(event, (TextMessage, BytesMessage)), event
        parts.append(event.data)
        if event.message_finished:
            return "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)  # type: ignore[arg-type]


async def _echo_round(client: H2WsClient, sid: int) -> None:
    """Text, binary, fragmented, 1 MiB and ping/pong, each echoed back."""
    await client.send(sid, TextMessage(data="hello"))
    assert await _message(client, sid) == "hello"
    await client.send(sid, BytesMessage(data=b"\x00\x01binary"))
    assert await _message(client, sid) == b"\x00\x01binary"
    await client.send(sid, TextMessage(data="frag", message_finished=False))
    await client.send(sid, TextMessage(data="men", message_finished=False))
    await client.send(sid, TextMessage(data="ted", message_finished=True))
    assert await _message(client, sid) == "fragmented"
    big = os.urandom(MIB)
    await client.send(sid, BytesMessage(data=big))
    assert await _message(client, sid) == big
    await client.send(sid, Ping(payload=b"are you there"))
    pong = await client.next_event(sid)
    assert isinstance(pong, Pong) and pong.payload == b"are you there"


async def test_messages_pings_and_client_close_code_cross_to_an_h1_backend(
    nursery: trio.Nursery,
) -> None:
    backend = await start_ws_backend(nursery)
    proxy = await start_ws_proxy(nursery, [("h1", backend.port)])
    client = await H2WsClient.open(proxy.port)
    assert client.server_settings is not None
    assert client.server_settings.get(_ENABLE_CONNECT) == 1
    sid = await client.connect("/chat?room=1", headers=[(b"sec-websocket-protocol", b"chat")])
    head = client.streams[sid].head
    assert head is not None and head[b":status"] == b"200"
    assert b"sec-websocket-accept" not in head and b"upgrade" not in head
    # wsproto accepted the HTTP/1.1 Upgrade (key and version checked on its side; its
    # Sec-WebSocket-Accept checked on ours); the subprotocol offer and forwarding went along.
    (request,) = backend.requests
    assert request.path == "/chat?room=1"
    assert request.proposed_subprotocols == ("chat",)
    assert b"x-forwarded-for" in {k.lower() for k, _ in request.headers}
    await _echo_round(client, sid)
    await client.send(sid, CloseConnection(code=4001, reason="client done"))
    close = await client.next_event(sid)
    assert isinstance(close, CloseConnection) and close.code == 4001  # echoed by the backend
    st = await client.until_done(sid)
    assert st.ended and st.reset is None  # END_STREAM, not a reset
    assert backend.closed_with == [4001]
    await trio.sleep(0.05)
    (record,) = proxy.records
    assert (record.method, record.status, record.error_kind) == ("CONNECT", 200, None)
    assert record.bytes_in > MIB and record.bytes_out > MIB


async def test_backend_close_code_reaches_the_client(nursery: trio.Nursery) -> None:
    backend = await start_ws_backend(nursery)
    proxy = await start_ws_proxy(nursery, [("h1", backend.port)])
    client = await H2WsClient.open(proxy.port)
    sid = await client.connect()
    await client.send(sid, TextMessage(data="close 1000"))
    close = await client.next_event(sid)
    assert isinstance(close, CloseConnection)
    assert (close.code, close.reason) == (1000, "backend says bye")
    await client.send(sid, close.response())
    assert (await client.until_done(sid)).reset is None


async def test_message_over_the_cap_closes_with_1009(nursery: trio.Nursery) -> None:
    backend = await start_ws_backend(nursery)
    limits = HttpLimits(websocket=WebSocketLimits(max_message_size_bytes=64 * 1024))
    proxy = await start_ws_proxy(nursery, [("h1", backend.port)], limits)
    client = await H2WsClient.open(proxy.port)
    sid = await client.connect()
    await client.send(sid, BytesMessage(data=b"x" * 60_000))  # under the cap: relayed
    assert await _message(client, sid) == b"x" * 60_000
    await client.send(sid, BytesMessage(data=b"y" * 100_000))
    close = await client.next_event(sid)
    assert isinstance(close, CloseConnection) and close.code == 1009
    await client.until_done(sid)
    assert b"y" * 100_000 not in backend.received
    # One stream ended; the connection serves on.
    again = await client.connect()
    assert client.streams[again].head[b":status"] == b"200"  # type: ignore[index]


async def test_client_ping_flood_closes_with_1008(nursery: trio.Nursery) -> None:
    backend = await start_ws_backend(nursery)
    limits = HttpLimits(websocket=WebSocketLimits(max_pings_per_window=3, ping_window_s=10.0))
    proxy = await start_ws_proxy(nursery, [("h1", backend.port)], limits)
    client = await H2WsClient.open(proxy.port)
    sid = await client.connect()
    for i in range(3):  # within the budget: each answered by the backend
        await client.send(sid, Ping(payload=b"%d" % i))
        pong = await client.next_event(sid)
        assert isinstance(pong, Pong) and pong.payload == b"%d" % i
    await client.send(sid, Ping(payload=b"one too many"))
    event = await client.next_event(sid)
    while isinstance(event, Pong):  # the overspending ping itself was still relayed
        event = await client.next_event(sid)
    assert isinstance(event, CloseConnection) and event.code == 1008
    await trio.sleep(0.05)
    assert proxy.records[-1].error_kind == "ws_ping_flood"


async def test_idle_tunnel_closes_with_1001(nursery: trio.Nursery) -> None:
    backend = await start_ws_backend(nursery)
    limits = HttpLimits(websocket=WebSocketLimits(idle_timeout_s=0.3))
    proxy = await start_ws_proxy(nursery, [("h1", backend.port)], limits)
    client = await H2WsClient.open(proxy.port)
    sid = await client.connect()
    with trio.fail_after(5):
        close = await client.next_event(sid)
    assert isinstance(close, CloseConnection) and close.code == 1001


async def test_drain_closes_the_tunnel_with_1001_at_the_deadline(nursery: trio.Nursery) -> None:
    backend = await start_ws_backend(nursery)
    proxy = await start_ws_proxy(nursery, [("h1", backend.port)])
    client = await H2WsClient.open(proxy.port)
    sid = await client.connect()
    await client.send(sid, TextMessage(data="before"))
    assert await _message(client, sid) == "before"
    started_at = trio.current_time()
    proxy.ctx.start_drain(0.5)
    await client.send(sid, TextMessage(data="during grace"))
    assert await _message(client, sid) == "during grace"  # relayed until the deadline
    with trio.fail_after(5):
        close = await client.next_event(sid)
    assert isinstance(close, CloseConnection) and close.code == 1001
    assert trio.current_time() - started_at >= 0.45
    assert (await client.until_done(sid)).ended
    await trio.sleep(0.05)
    assert backend.closed_with == [1001]  # the backend got its close frame too
    assert proxy.records[-1].error_kind == "drain"


async def test_stream_failures_answer_that_stream_and_the_connection_serves_on(
    nursery: trio.Nursery,
) -> None:
    async def plain_http(stream: trio.SocketStream) -> None:  # answers 200, never 101
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    upgrades: list[bytes] = []

    async def wrong_accept(stream: trio.SocketStream) -> None:
        upgrades.append(await stream.receive_some(65536))
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n"
            b"sec-websocket-accept: " + accept_for(b"not-the-key") + b"\r\n\r\n"
        )
        await trio.sleep(1)

    ports = []
    for handler in (plain_http, wrong_accept):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, handler, listeners)
        ports.append(listeners[0].socket.getsockname()[1])
    ws_backend = await start_ws_backend(nursery)
    limits = HttpLimits()
    for port, status, kind in (
        (ports[0], b"502", "ws_refused"),
        (ports[1], b"502", "ws_bad_accept"),
        (free_port(), b"502", "connect_failed"),  # nobody listens there
    ):
        proxy = await start_ws_proxy(nursery, [("h1", port)], limits)
        client = await H2WsClient.open(proxy.port)
        sid = await client.connect()
        st = await client.until_done(sid)
        assert st.head is not None and st.head[b":status"] == status
        await trio.sleep(0.05)
        assert proxy.records[-1].error_kind == kind
        # Only that stream ended: the same connection answers the next request.
        after = await client.get("/after")
        assert after.head is not None and not client.closed
    # The upgrade the gateway sent: a GET with a fresh 16-byte key (RFC 6455 §4.1).
    lines = upgrades[0].split(b"\r\n")
    assert lines[0] == b"GET /chat HTTP/1.1"
    fields = dict(line.split(b": ", 1) for line in lines[1:] if b": " in line)
    assert fields[b"upgrade"] == b"websocket" and fields[b"connection"] == b"upgrade"
    assert fields[b"sec-websocket-version"] == b"13"
    assert len(base64.b64decode(fields[b"sec-websocket-key"], validate=True)) == 16
    good = await start_ws_proxy(nursery, [("h1", free_port()), ("h1", ws_backend.port)])
    client = await H2WsClient.open(good.port)
    sid = await client.connect()  # the dead first backend is retried on the second
    assert client.streams[sid].head[b":status"] == b"200"  # type: ignore[index]
    await client.send(sid, TextMessage(data="after retry"))
    assert await _message(client, sid) == "after retry"


async def test_disabled_key_announces_nothing_and_extended_connect_is_reset(
    nursery: trio.Nursery,
) -> None:
    backend = await start_ws_backend(nursery)
    proxy = await start_ws_proxy(
        nursery, [("h1", backend.port)], h2_limits=H2Limits(enable_connect_protocol=False)
    )
    client = await H2WsClient.open(proxy.port)
    assert client.server_settings is not None
    assert client.server_settings.get(_ENABLE_CONNECT, 0) == 0  # h2 states the 0 outright
    sid = await client.connect()
    st = await client.until_done(sid)
    assert st.head is None and st.reset == h2.errors.ErrorCodes.PROTOCOL_ERROR
    assert backend.requests == []
    # WebSocket off for the listener: not announced either, whatever the H2 key says.
    off = await start_ws_proxy(
        nursery, [("h1", backend.port)], HttpLimits(websocket=WebSocketLimits(enabled=False))
    )
    client = await H2WsClient.open(off.port)
    assert client.server_settings is not None
    assert client.server_settings.get(_ENABLE_CONNECT, 0) == 0


async def test_other_extended_connect_protocols_get_501(nursery: trio.Nursery) -> None:
    backend = await start_ws_backend(nursery)
    proxy = await start_ws_proxy(nursery, [("h1", backend.port)])
    client = await H2WsClient.open(proxy.port)
    sid = await client.connect(protocol=b"connect-udp")
    st = await client.until_done(sid)
    assert st.head is not None and st.head[b":status"] == b"501"
    assert backend.requests == []


async def test_h2_backend_with_rfc8441_gets_extended_connect(nursery: trio.Nursery) -> None:
    async with hypercorn_ws_backend() as port:
        proxy = await start_ws_proxy(nursery, [("h2", port)])
        client = await H2WsClient.open(proxy.port)
        sid = await client.connect()
        head = client.streams[sid].head
        assert head is not None and head[b":status"] == b"200"
        assert head[b"x-http-version"] == b"2"  # hypercorn answered on its HTTP/2 stream
        await _echo_round(client, sid)
        await client.send(sid, TextMessage(data="close 4002"))
        close = await client.next_event(sid)
        assert isinstance(close, CloseConnection) and close.code == 4002
        assert (await client.until_done(sid)).reset is None  # hypercorn ends its stream

        await trio.sleep(0.05)
        assert proxy.records[-1].back == "h2" and proxy.records[-1].status == 200


async def test_h2_backend_without_rfc8441_is_passed_over_then_502(
    nursery: trio.Nursery,
) -> None:
    # A plain h2 server (h2's defaults announce no SETTINGS_ENABLE_CONNECT_PROTOCOL).
    seen: list[list[tuple[bytes, bytes]]] = []

    async def handle(stream: trio.SocketStream) -> None:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        conn.initiate_connection()
        await stream.send_all(conn.data_to_send())
        while data := await stream.receive_some(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    seen.append(list(event.headers))
                    conn.send_headers(event.stream_id, [(b":status", b"200")], end_stream=True)
            await stream.send_all(conn.data_to_send())

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, handle, listeners)
    plain_h2 = listeners[0].socket.getsockname()[1]
    proxy = await start_ws_proxy(nursery, [("h2", plain_h2)])
    client = await H2WsClient.open(proxy.port)
    sid = await client.connect()
    st = await client.until_done(sid)
    assert st.head is not None and st.head[b":status"] == b"502"
    await trio.sleep(0.05)
    assert proxy.records[-1].error_kind == "ws_backend_no_rfc8441"
    assert seen == []  # no CONNECT ever reached it
    ok = await client.get("/plain")  # the same connection and backend serve on
    assert ok.head is not None and ok.head[b":status"] == b"200"
    # With an H1 WebSocket backend behind it, the tunnel goes there instead.
    backend = await start_ws_backend(nursery)
    mixed = await start_ws_proxy(nursery, [("h2", plain_h2), ("h1", backend.port)])
    client = await H2WsClient.open(mixed.port)
    sid = await client.connect()
    assert client.streams[sid].head[b":status"] == b"200"  # type: ignore[index]
    await client.send(sid, TextMessage(data="via h1"))
    assert await _message(client, sid) == "via h1"


async def test_client_reset_ends_the_backend_connection(nursery: trio.Nursery) -> None:
    backend = await start_ws_backend(nursery)
    proxy = await start_ws_proxy(nursery, [("h1", backend.port)])
    client = await H2WsClient.open(proxy.port)
    sid = await client.connect()
    await client.send(sid, TextMessage(data="hi"))
    assert await _message(client, sid) == "hi"
    client.h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
    await client.flush()
    with trio.fail_after(5):
        while not backend.closed_with:
            await trio.sleep(0.02)
    assert backend.closed_with == [1006]  # the connection went away without a close frame
    again = await client.connect()
    assert client.streams[again].head[b":status"] == b"200"  # type: ignore[index]
    try:
        await client.send(again, TextMessage(data="still here"))
        assert await _message(client, again) == "still here"
    except StreamGone:
        raise AssertionError("the second tunnel failed") from None
