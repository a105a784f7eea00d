"""Issue 17 on the HTTP/1.1 path, each item as the attack or fault it names, against real
peers on loopback: the outcome the client sees, and a neighbour on the same worker that is
served meanwhile."""

from __future__ import annotations

import socket
import struct

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
    assert [r.status for r in proxy.records if r.status != 200] == [431]
    assert all(ok for _, ok, _ in proxy.results)  # the client's fault, never the backend's
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


# ---- item 5: an early backend answer while the upload still streams ------------------------


async def _early_answer_backend(nursery: trio.Nursery, answer: bytes) -> int:
    """A backend that reads only the request head, answers at once and closes with the body
    still arriving (its kernel resets the connection: unread data)."""

    async def serve(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        await stream.send_all(answer)
        stream.socket.close()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, serve, listeners)
    return listeners[0].socket.getsockname()[1]


@pytest.mark.parametrize("status", [401, 413])
async def test_early_backend_answer_reaches_the_client(nursery: trio.Nursery, status: int) -> None:
    from workers.http1 import Backend

    answer = b"HTTP/1.1 %d No\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno" % status
    port = await _early_answer_backend(nursery, answer)
    neighbour = await start_backend(nursery)
    early = Backend("early", "127.0.0.1", port)
    ok = Backend("ok", "127.0.0.1", neighbour.port)
    proxy = await start_proxy(nursery, [early, ok])  # round robin: early first
    for _ in range(3):
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        head = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (64 << 20)
        sent = [0]
        async with trio.open_nursery() as upload:
            upload.start_soon(_flood, stream, head, 64 << 20, sent)
            data = await _read_until_close(stream)
            upload.cancel_scope.cancel()
        assert data.startswith(b"HTTP/1.1 %d " % status), data[:80]
        assert data.endswith(b"\r\n\r\nno")
        record = proxy.records[-1]
        assert (record.status, record.error_kind, record.backend_id) == (status, None, "early")
        await _neighbour_is_served(proxy.port)  # the other backend serves meanwhile
    # An early answer is an answer: never a failure held against the backend.
    assert [r for r in proxy.results if r[0] == "early"] == [("early", True, "ok")] * 3


# ---- item 6: a close-delimited response cut by a reset or a TLS end without close_notify ---


def _tls_contexts(tmp_path):  # type: ignore[no-untyped-def]
    import ssl

    from tools.make_certs import make_certs

    certs = make_certs(tmp_path / "certs")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certs.cert, certs.key)
    client = ssl.create_default_context(cafile=str(certs.ca_cert))
    return server, client


@pytest.mark.parametrize(
    ("ending", "complete"),
    [
        ("tcp_fin", True),
        ("tcp_reset", False),
        ("tls_close_notify", True),
        ("tls_without_close_notify", False),
    ],
)
async def test_close_delimited_body_is_complete_only_after_a_clean_close(
    nursery: trio.Nursery, tmp_path, ending: str, complete: bool
) -> None:
    from workers.http1 import Backend

    tls = ending.startswith("tls")
    server_ctx, client_ctx = _tls_contexts(tmp_path) if tls else (None, None)

    async def serve(tcp: trio.SocketStream) -> None:
        stream: trio.abc.Stream = tcp
        if server_ctx is not None:
            stream = trio.SSLStream(tcp, server_ctx, server_side=True)
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello")
        await trio.sleep(0.05)  # the proxy relays "hello" before the end arrives
        if ending == "tcp_reset":
            tcp.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            tcp.socket.close()
        elif ending == "tls_close_notify":
            await stream.aclose()
        else:
            await tcp.aclose()  # a FIN: for TLS, without close_notify

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, serve, listeners)
    backend = Backend("cut", "localhost", listeners[0].socket.getsockname()[1])

    async def connect(b: Backend) -> trio.abc.Stream:
        tcp = await trio.open_tcp_stream("127.0.0.1", b.port)
        if client_ctx is None:
            return tcp
        stream = trio.SSLStream(tcp, client_ctx, server_hostname="localhost")
        await stream.do_handshake()
        return stream

    proxy = await start_proxy(nursery, [backend], connect=connect)
    # An HTTP/1.0 client reads the body until our close: only a reset can say "cut short".
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    await stream.send_all(b"GET / HTTP/1.0\r\n\r\n")
    data, client_end = await _answer_then_end(stream)
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\nhello")
    assert client_end == ("fin" if complete else "reset")
    for _ in range(2):  # the worker serves on after the fault, the same way
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        data = await _read_until_close(stream)
        assert data.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in data
        assert b"\r\n5\r\nhello\r\n" in data
        assert data.endswith(b"\r\n0\r\n\r\n") == complete, data
        assert proxy.records[-1].error_kind == (None if complete else "upstream_reset")


# ---- item 4: lingering close after an early answer with the client still sending -----------


async def _paced_upload(stream: trio.abc.Stream, pause_s: float, failed_at: list[float]) -> None:
    try:
        while True:
            await stream.send_all(FILLER)
            await trio.sleep(pause_s)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        failed_at.append(trio.current_time())


async def _answer_then_end(stream: trio.abc.Stream) -> tuple[bytes, str]:
    """What the client reads, and how the read side ended: "fin" or "reset"."""
    data = b""
    with trio.fail_after(10):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return data, "reset"
            if not chunk:
                return data, "fin"
            data += chunk


@pytest.mark.parametrize(
    ("pause_s", "total_s", "max_bytes", "closed_within_s"),
    [
        pytest.param(0.05, 1.0, 64 << 20, (0.8, 3.0), id="paced_client_bounded_by_total_time"),
        pytest.param(0.0, 5.0, 1 << 20, (0.0, 3.0), id="flooding_client_bounded_by_bytes"),
    ],
)
async def test_early_error_lingers_so_the_answer_is_not_reset(
    nursery: trio.Nursery,
    pause_s: float,
    total_s: float,
    max_bytes: int,
    closed_within_s: tuple[float, float],
) -> None:
    from gateway.http.lingering_close import LingerLimits

    backend = await start_backend(nursery)
    limits = HttpLimits(
        max_body_bytes=1000,
        linger=LingerLimits(total_s=total_s, idle_s=0.5, max_bytes=max_bytes),
    )
    proxy = await start_proxy(nursery, [backend], limits)
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    await stream.send_all(b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\n")
    failed_at: list[float] = []
    async with trio.open_nursery() as client:
        client.start_soon(_paced_upload, stream, pause_s, failed_at)
        data, ending = await _answer_then_end(stream)
        answered_at = trio.current_time()
        await _neighbour_is_served(proxy.port)  # the worker serves while one connection lingers
        with trio.fail_after(5):
            while not failed_at:
                await trio.sleep(0.01)
    assert data.startswith(b"HTTP/1.1 413 ")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-length: %d" % len(body) in head.lower()  # the whole answer arrived
    assert ending == "fin"  # half-closed after the answer, never a reset that could eat it
    low, high = closed_within_s
    assert low <= failed_at[0] - answered_at <= high


async def test_idle_client_ends_the_linger_at_once(nursery: trio.Nursery) -> None:
    backend = await start_backend(nursery)
    proxy = await start_proxy(nursery, [backend], HttpLimits(max_body_bytes=1000))
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    await stream.send_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\nabc")
    data, ending = await _answer_then_end(stream)
    assert data.startswith(b"HTTP/1.1 413 ") and ending == "fin"
    await stream.aclose()  # our FIN ends the linger: the proxy's side closes without waiting
    await _neighbour_is_served(proxy.port)


# ---- item 13: the retry budget bounds what a failing backend adds to the others ------------


async def _dead_port() -> int:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there: connects are refused
    return port


@pytest.mark.parametrize(("percent", "min_concurrency", "retried"), [(10, 2, 2), (100, 3, 20)])
async def test_retry_budget_bounds_retries_onto_healthy_backends(
    nursery: trio.Nursery, percent: int, min_concurrency: int, retried: int
) -> None:
    from gateway.http.retry_budget import RetryBudgetLimits
    from workers.http1 import Backend, H1Context, serve_h1_connection

    async def slow(peer, req):
        await peer.read_body()
        await trio.sleep(0.5)  # retries admitted in the burst are all still in flight
        await peer.respond(200, b"ok")

    good_peer = await start_backend(nursery, slow)
    dead = Backend("dead", "127.0.0.1", await _dead_port())
    good = Backend("good", "127.0.0.1", good_peer.port)

    def dead_first(head: object, client: str, tried: object) -> Backend:
        return good if tried else dead

    budget = RetryBudgetLimits(percent=percent, min_concurrency=min_concurrency)
    denied: list[int] = []
    ctx = H1Context(
        listener="t",
        pick_backend=dead_first,
        limits=HttpLimits(retry_budget=budget),
        on_retry_denied=lambda: denied.append(1),
    )

    async def handle(stream: trio.SocketStream) -> None:
        await serve_h1_connection(stream, ctx)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, handle, listeners)
    port = listeners[0].socket.getsockname()[1]
    statuses: list[int] = []

    async def one() -> None:
        client = await H11Client.open(port)
        response, _, _ = await client.request(b"GET", b"/")
        statuses.append(response.status_code)
        await client.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as clients:
            for _ in range(20):
                clients.start_soon(one)
    assert sorted(statuses) == [200] * retried + [502] * (20 - retried)
    assert len(good_peer.requests) == retried  # the healthy backend took only the budget
    assert ctx.retry_budget().denied == len(denied) == 20 - retried  # counted as a metric
    assert (ctx.retry_budget().active_requests, ctx.retry_budget().active_retries) == (0, 0)


# ---- item 14: whose X-Forwarded-For / Forwarded / X-Real-IP are believed ------------------

_SPOOFED = [
    (b"x-forwarded-for", b"6.6.6.6"),
    (b"forwarded", b"for=6.6.6.6"),
    (b"x-real-ip", b"6.6.6.6"),
]


@pytest.mark.parametrize(
    ("mode", "trusted", "kept"),
    [
        ("append", (), True),
        ("replace", (), False),
        ("trusted", ("127.0.0.0/8",), True),
        ("trusted", ("10.0.0.0/8", "::1/128"), False),
    ],
)
async def test_client_forwarding_claims_follow_the_policy(
    nursery: trio.Nursery, mode: str, trusted: tuple[str, ...], kept: bool
) -> None:
    from gateway.http.forwarding import ForwardingPolicy

    backend = await start_backend(nursery)
    limits = HttpLimits(forwarding=ForwardingPolicy(mode, trusted))
    proxy = await start_proxy(nursery, [backend], limits)
    client = await H11Client.open(proxy.port)
    response, _, _ = await client.request(b"GET", b"/", headers=_SPOOFED)
    assert response.status_code == 200
    seen = {bytes(n): bytes(v) for n, v in backend.requests[-1].headers}
    if kept:
        assert seen[b"x-forwarded-for"] == b"6.6.6.6, 127.0.0.1"
        assert seen[b"forwarded"] == b"for=6.6.6.6" and seen[b"x-real-ip"] == b"6.6.6.6"
    else:
        assert seen[b"x-forwarded-for"] == b"127.0.0.1"
        assert b"forwarded" not in seen and b"x-real-ip" not in seen
    await _neighbour_is_served(proxy.port)


# ---- item 8: tunnels take pool slots from a budget of their own ----------------------------


async def _tunnel_friendly_backend(nursery: trio.Nursery) -> int:
    """101 to an Upgrade (then holds the tunnel), reads a POST body to its end, else 200."""

    async def serve(stream: trio.SocketStream) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                lower = head.lower()
                if b"upgrade: websocket" in lower:
                    await stream.send_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                        b"Upgrade: websocket\r\n\r\n"
                    )
                    while await stream.receive_some(65536):
                        pass
                    return
                if b"content-length: " in lower:
                    length = int(lower.split(b"content-length: ")[1].split(b"\r\n")[0])
                    while len(buf) < length:
                        chunk = await stream.receive_some(65536)
                        if not chunk:
                            return
                        buf += chunk
                    buf = buf[length:]
                await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except trio.BrokenResourceError:
            return

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, serve, listeners)
    return listeners[0].socket.getsockname()[1]


async def _open_tunnel(port: int, kind: str) -> tuple[trio.SocketStream, bytes]:
    """A WebSocket tunnel or an upload the client never finishes; the proxy's first answer
    (b"" while it holds the request open)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    if kind == "websocket":
        await stream.send_all(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    else:
        await stream.send_all(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nab")
    answer = b""
    with trio.move_on_after(1.0 if kind == "websocket" else 0.3):
        answer = await stream.receive_some(65536)
    return stream, answer


@pytest.mark.parametrize("kind", ["websocket", "upload"])
async def test_tunnels_cannot_starve_ordinary_requests(nursery: trio.Nursery, kind: str) -> None:
    from workers.http1 import Backend

    port = await _tunnel_friendly_backend(nursery)
    pool = PoolLimits(max_per_backend=2, max_tunnels_per_backend=2, connect_timeout_ms=300)
    proxy = await start_proxy(nursery, [Backend("b", "127.0.0.1", port)], HttpLimits(pool=pool))
    held = []
    for _ in range(3):  # as many tunnels as ordinary slots, and one more
        stream, answer = await _open_tunnel(proxy.port, kind)
        held.append(stream)
        if len(held) <= 2:
            assert answer.startswith(b"HTTP/1.1 101 ") if kind == "websocket" else answer == b""
        else:
            if kind == "upload":  # a streamed upload waits for a tunnel slot, then 503
                answer = await _read_until_close(stream)
            assert answer.startswith(b"HTTP/1.1 503 "), answer[:60]  # the tunnel budget is spent
    clients = [await H11Client.open(proxy.port) for _ in range(2)]
    with trio.fail_after(5):
        for _ in range(3):  # both ordinary slots are free for ordinary requests
            for client in clients:
                response, body, _ = await client.request(b"GET", b"/")
                assert (response.status_code, body) == (200, b"ok")
    for stream in held:
        await stream.aclose()
