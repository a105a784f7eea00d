"""Plain-TCP client connections run as coroutines of the run's dispatcher
(workers/http1/dispatch.py, workers/readiness.py): proof they do, that a lapse reaches a
connection parked there with the same answer as before, that a connection handed to trio
mid-way (a streamed upload, a WebSocket tunnel, a fresh dial) comes back or finishes there,
drain with idle and busy resident connections, an outside cancellation, and many
connections at once. Real h11 / wsproto / raw-socket peers on loopback."""

from __future__ import annotations

import functools
import socket

import h11
import trio
import wsproto
import wsproto.events as ws_events
from h1_peers import (
    H11Client,
    gated_handler,
    raw_exchange,
    start_backend,
    start_proxy,
    start_ws_echo_backend,
)

from gateway.http.limits import HttpLimits
from workers.http1 import Backend, H1Context, RequestRecord, serve_h1_connection
from workers.readiness import DRIVING, existing_readiness


def _resumed() -> int:
    readiness = existing_readiness()
    return readiness.resumed if readiness is not None else 0


def _handoffs() -> int:
    readiness = existing_readiness()
    return readiness.handoffs if readiness is not None else 0


def _assert_clean() -> None:
    """No resident coroutine yielded a trio trap (a path into trio without TO_TRIO) and no
    reschedule failed."""
    readiness = existing_readiness()
    assert readiness is not None
    assert (readiness.strays, readiness.failures) == (0, 0)


async def test_keepalive_requests_run_on_the_dispatcher(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend])
    client = await H11Client.open(proxy.port)
    await client.request(b"GET", b"/warm")  # the first request dials (in trio)
    before = _resumed()
    handoffs = _handoffs()
    for i in range(20):
        response, body, _ = await client.request(b"GET", b"/p%d" % i)
        assert response.status_code == 200 and body == b"echo:"
        assert (b"x-target", b"/p%d" % i) in response.headers
    # Every request parks at least once on the dispatcher (waiting for the upstream's answer).
    assert _resumed() - before >= 20
    assert _handoffs() == handoffs  # ... and never needs trio in between
    assert backend.connections == 1  # the pooled upstream connection is reused from there
    await client.aclose()
    _assert_clean()


async def test_off_runs_each_connection_in_its_own_task(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend], resident=False)
    client = await H11Client.open(proxy.port)
    before = _resumed()
    for _ in range(5):
        response, _, _ = await client.request(b"GET", b"/")
        assert response.status_code == 200
    assert _resumed() == before
    await client.aclose()


async def test_slow_head_parked_on_the_dispatcher_is_408(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend], HttpLimits(header_timeout_ms=200))
    with trio.fail_after(5):
        data, closed = await raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\n")
    assert data.startswith(b"HTTP/1.1 408 ") and closed
    assert proxy.records[-1].error_kind == "header_timeout"
    _assert_clean()


async def test_idle_keepalive_lapse_closes_without_a_word(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend], HttpLimits(header_timeout_ms=200))
    client = await H11Client.open(proxy.port)
    response, _, _ = await client.request(b"GET", b"/")
    assert response.status_code == 200
    with trio.fail_after(3):
        assert await client.stream.receive_some(100) == b""  # closed, no 408
    assert len(proxy.records) == 1


async def test_upstream_head_lapse_while_parked_is_504(nursery: trio.Nursery) -> None:
    async def late(peer, req):
        await peer.read_body()
        if req.target == b"/late":
            await trio.sleep(2)
        await peer.respond(200, b"ok")

    backend = await start_backend(nursery, late)
    proxy = await start_proxy(nursery, [backend], HttpLimits(head_timeout_ms=200))
    client = await H11Client.open(proxy.port)
    response, _, _ = await client.request(b"GET", b"/")  # keep-alive, then parked upstream
    assert response.status_code == 200
    with trio.fail_after(5):
        response, _, _ = await client.request(b"GET", b"/late")
    assert response.status_code == 504
    await trio.sleep(0.05)  # the record follows the answer
    assert proxy.records[-1].error_kind == "head_timeout"
    _assert_clean()


async def test_streamed_upload_after_keepalive_get_then_back(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend])
    client = await H11Client.open(proxy.port)
    response, body, _ = await client.request(b"GET", b"/one")
    assert body == b"echo:"
    # A body still arriving: the streaming shape (a nursery) runs in the owner task.
    headers = [(b"host", b"a"), (b"transfer-encoding", b"chunked")]
    await client.send(h11.Request(method=b"POST", target=b"/up", headers=headers))
    await client.send(h11.Data(data=b"first-"))
    await trio.sleep(0.05)
    await client.send(h11.Data(data=b"second"), h11.EndOfMessage())
    response, body, _ = await client.read_response()
    assert response.status_code == 200 and body == b"echo:first-second"
    client.conn.start_next_cycle()
    before = _resumed()
    for _ in range(3):  # ... and the connection is back on the dispatcher
        response, body, _ = await client.request(b"GET", b"/again")
        assert response.status_code == 200
    assert _resumed() - before >= 3
    await client.aclose()
    _assert_clean()


async def test_websocket_upgrade_after_keepalive_get(nursery: trio.Nursery) -> None:
    plain = await start_backend(nursery)
    ws_b = await start_ws_echo_backend(nursery)
    http_b = Backend("http", "127.0.0.1", plain.port)
    records: list[RequestRecord] = []

    def pick(head, client, tried=()):
        return ws_b if head.path.startswith(b"/ws") else http_b

    ctx = H1Context(listener="t", pick_backend=pick, on_request_done=records.append)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(
        trio.serve_listeners, functools.partial(serve_h1_connection, ctx=ctx), listeners
    )
    port = listeners[0].socket.getsockname()[1]
    client = await H11Client.open(port)
    response, body, _ = await client.request(b"GET", b"/plain")
    assert response.status_code == 200 and body == b"echo:"
    ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    stream = client.stream
    await stream.send_all(ws.send(ws_events.Request(host="a", target="/ws")))
    with trio.fail_after(5):
        got: list[object] = []
        while not any(isinstance(e, ws_events.TextMessage) for e in got):
            if any(isinstance(e, ws_events.AcceptConnection) for e in got) and not any(
                isinstance(e, str) for e in got
            ):
                await stream.send_all(ws.send(ws_events.Message(data="over the tunnel")))
                got.append("sent")
            ws.receive_data(await stream.receive_some(65536))
            got.extend(ws.events())
    assert [e.data for e in got if isinstance(e, ws_events.TextMessage)] == ["over the tunnel"]
    await stream.aclose()
    await trio.sleep(0.1)
    assert [r.status for r in records] == [200, 101]
    _assert_clean()


async def test_drain_closes_idle_and_finishes_busy_resident_connections(
    nursery: trio.Nursery,
) -> None:
    gate = trio.Event()
    backend = await start_backend(nursery, gated_handler(gate))
    proxy = await start_proxy(nursery, [backend])
    idle = [await H11Client.open(proxy.port) for _ in range(3)]
    for c in idle:
        await c.request(b"GET", b"/")
    busy = [await H11Client.open(proxy.port) for _ in range(3)]
    results: list[tuple[h11.Response, bytes, list]] = []

    async def slow(c: H11Client) -> None:
        await c.request(b"GET", b"/")  # resident and pooled before the slow one
        results.append(await c.request(b"GET", b"/slow"))

    async with trio.open_nursery() as inner:
        for c in busy:
            inner.start_soon(slow, c)
        await trio.sleep(0.2)
        proxy.ctx.start_drain(0.3)
        with trio.fail_after(2):
            for c in idle:
                assert await c.stream.receive_some(10) == b""  # idle keep-alive closed
        gate.set()
    assert len(results) == 3
    for response, body, _ in results:
        assert body == b"ok" and (b"connection", b"close") in list(response.headers)
    for c in busy:
        with trio.fail_after(2):
            assert await c.stream.receive_some(10) == b""  # closed after the answer
    _assert_clean()


async def test_outside_cancellation_ends_a_parked_connection(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    ctx = H1Context(
        listener="t",
        pick_backend=lambda head, client, tried=(): Backend("b", "127.0.0.1", backend.port),
    )
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    ended = trio.Event()
    scope = trio.CancelScope()

    async def handle(stream: trio.SocketStream) -> None:
        with scope:  # as the worker's per-connection scope, cut at the drain deadline
            await serve_h1_connection(stream, ctx)
        ended.set()

    nursery.start_soon(trio.serve_listeners, handle, listeners)
    client = await H11Client.open(port)
    response, _, _ = await client.request(b"GET", b"/")
    assert response.status_code == 200
    await trio.sleep(0.05)  # parked on the dispatcher, waiting for the next head
    scope.cancel()
    with trio.fail_after(2):
        await ended.wait()
        assert await client.stream.receive_some(10) == b""


async def test_many_connections_at_once(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend])
    ok = 0

    async def one(i: int) -> None:
        nonlocal ok
        client = await H11Client.open(proxy.port)
        for j in range(3):
            response, body, _ = await client.request(b"POST", b"/", body=b"%d-%d" % (i, j))
            assert response.status_code == 200 and body == b"echo:%d-%d" % (i, j)
            ok += 1
        await client.aclose()

    with trio.fail_after(20):
        async with trio.open_nursery() as inner:
            for i in range(200):
                inner.start_soon(one, i)
    assert ok == 600
    assert sum(r.status == 200 for r in proxy.records) == 600
    _assert_clean()


# ---- writes held for the batch's end (Readiness.write_soon / settle) ----


def _readiness():  # type: ignore[no-untyped-def]
    readiness = existing_readiness()
    assert readiness is not None
    return readiness


async def _sized_handler(peer, req) -> None:  # type: ignore[no-untyped-def]
    """A 12,000-byte body naming its request (held whole: under the 16 KiB per-socket cap)."""
    await peer.read_body()
    await peer.respond(200, (req.target + b".") * (12000 // (len(req.target) + 1)))


def _responses(data: bytes) -> list[tuple[int, bytes]]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("host", "a")]))  # client side
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    out: list[tuple[int, bytes]] = []
    status, body = 0, bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            return out
        if isinstance(event, h11.Response):
            status, body = event.status_code, bytearray()
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            out.append((status, bytes(body)))
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return out
            conn.start_next_cycle()
            conn.send(h11.Request(method="GET", target="/", headers=[("host", "a")]))
            conn.send(h11.EndOfMessage())


async def _pipelined_client(port: int, n: int) -> trio.SocketStream:
    """A client with a 4 KiB receive buffer that sends ``n`` pipelined GETs, the last one
    ``Connection: close``, and reads nothing yet."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    requests = b"".join(
        b"GET /r%02d HTTP/1.1\r\nHost: a\r\n%s\r\n"
        % (i, b"Connection: close\r\n" if i == n - 1 else b"")
        for i in range(n)
    )
    await stream.send_all(requests)
    return stream


async def _read_to_eof(stream: trio.SocketStream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some(65536):
        data += chunk
    return bytes(data)


async def test_keepalive_responses_are_held_for_the_batch_end(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend])
    client = await H11Client.open(proxy.port)
    await client.request(b"GET", b"/warm")
    held = _readiness().held
    for i in range(10):
        response, body, _ = await client.request(b"GET", b"/h%d" % i)
        assert response.status_code == 200 and body == b"echo:"
    # Each request's upstream write and its response were held, then written at the end of
    # their batch (in order: h11 would fail on anything else).
    assert _readiness().held - held >= 20
    assert DRIVING.stalls == 0
    await client.aclose()
    _assert_clean()


async def test_held_responses_that_find_no_room_go_out_in_order_before_the_close(
    nursery: trio.Nursery,
) -> None:
    backend = await start_backend(nursery, _sized_handler)
    proxy = await start_proxy(nursery, [backend], small_buffers=True)
    stalled = _readiness().stalled_writes if existing_readiness() else 0
    n = 24  # 24 x 12 KB: far more than the client's and the proxy's buffers hold
    stream = await _pipelined_client(proxy.port, n)
    await trio.sleep(0.5)  # the proxy answers into full buffers
    assert _readiness().stalled_writes > stalled  # a batch's end found no room
    with trio.fail_after(10):
        data = await _read_to_eof(stream)
    responses = _responses(data)
    assert [status for status, _ in responses] == [200] * n
    for i, (_, body) in enumerate(responses):
        target = b"/r%02d." % i
        assert body == target * (12000 // len(target)), i
    assert data.endswith(responses[-1][1])  # nothing after the last response: then the close
    await trio.sleep(0.05)
    assert DRIVING.stalls == 0
    assert len(proxy.records) == n
    _assert_clean()


async def test_a_held_last_response_that_finds_no_room_is_written_before_the_close(
    nursery: trio.Nursery,
) -> None:
    backend = await start_backend(nursery, _sized_handler)
    # The proxy's send buffer (the kernel's minimum) and the client's window together hold
    # less than the 12 KB response the batch held: its end writes part, the rest stalls,
    # and the request asked for the close.
    proxy = await start_proxy(nursery, [backend], small_buffers=True, buffer_bytes=1024)
    stalled = _readiness().stalled_writes if existing_readiness() else 0
    stream = await _pipelined_client(proxy.port, 1)
    await trio.sleep(0.3)
    assert _readiness().stalled_writes > stalled
    with trio.fail_after(10):
        data = await _read_to_eof(stream)
    ((status, body),) = _responses(data)
    assert status == 200 and body == b"/r00." * (12000 // 5)
    assert DRIVING.stalls == 0
    _assert_clean()


async def test_a_client_that_never_reads_is_closed_after_the_write_timeout(
    nursery: trio.Nursery,
) -> None:
    backend = await start_backend(nursery, _sized_handler)
    proxy = await start_proxy(
        nursery, [backend], HttpLimits(body_timeout_ms=300), small_buffers=True
    )
    stream = await _pipelined_client(proxy.port, 24)
    with trio.fail_after(5):
        while len(proxy.records) < 1 or DRIVING.stalls:
            await trio.sleep(0.05)
    # The connection gave up on the bytes the client never took and closed: reading now
    # gets what fit, then the end (a reset: unread data was dropped).
    with trio.fail_after(5):
        try:
            data = await _read_to_eof(stream)
        except trio.BrokenResourceError:
            data = b""
    assert len(data) < 24 * 12000
    assert DRIVING.stalls == 0
    _assert_clean()
