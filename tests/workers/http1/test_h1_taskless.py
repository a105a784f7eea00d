"""HTTP/1.1 connections started without a trio task (workers/http1/taskless.py, how the
worker starts a plain-TCP connection whose first bytes are HTTP/1.1): one that needs nothing
of trio is served and closed without ever getting a task; each way into trio gives it one
(its end needs a wait, the host cuts it, its code fails), and every connection is ended
exactly once (conftest checks it after each test). Real h11 / raw-socket peers on loopback;
the whole proxy suite also runs this way (conftest's "taskless" path)."""

from __future__ import annotations

import os

import trio
from h1_peers import (
    H11Backend,
    H11Client,
    Handler,
    Proxy,
    TasklessHost,
    default_handler,
    gated_handler,
    start_backend,
    start_proxy,
)

from gateway.http.limits import HttpLimits
from workers.http1 import RequestRecord
from workers.http1.taskless import HTTP1, NOT_YET, OTHER
from workers.readiness import existing_readiness


async def _warm(proxy: Proxy) -> None:
    """A first connection dials the backend (trio code: that one gets a task) and leaves the
    upstream connection pooled for the next ones."""
    client = await H11Client.open(proxy.port)
    response, _, _ = await client.request(b"GET", b"/warm")
    assert response.status_code == 200
    await client.aclose()
    await _all_ended(proxy)


async def _warmed(
    nursery: trio.Nursery, handler: Handler = default_handler, limits: HttpLimits | None = None
) -> tuple[Proxy, TasklessHost, H11Backend]:
    """A proxy starting connections without a task, its upstream connection pooled."""
    backend = await start_backend(nursery, handler)
    proxy = await start_proxy(nursery, [backend], limits)
    assert proxy.taskless is not None
    await _warm(proxy)
    return proxy, proxy.taskless, backend


async def _all_ended(proxy: Proxy) -> None:
    host = proxy.taskless
    assert host is not None
    with trio.fail_after(5):
        while host.ended < host.started or host.live_scopes:
            await trio.sleep(0.01)


async def _read_to_end(stream: trio.SocketStream) -> tuple[bytes, str]:
    """Everything until the proxy's close, and how it closed: "fin" or "reset"."""
    data = bytearray()
    with trio.fail_after(5):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return bytes(data), "reset"
            if not chunk:
                return bytes(data), "fin"
            data += chunk


async def test_a_connection_that_needs_no_trio_code_never_gets_a_task(
    nursery: trio.Nursery,
) -> None:
    proxy, host, backend = await _warmed(nursery)
    tasks = host.tasks
    # Keep-alive requests, the last one asking for the close: the proxy closes.
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    client = H11Client(stream)
    for i in range(5):
        response, body, _ = await client.request(b"GET", b"/k%d" % i)
        assert response.status_code == 200 and body == b"echo:"
    await stream.send_all(b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    data, ending = await _read_to_end(stream)
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"echo:") and ending == "fin"
    await stream.aclose()
    # A client that closes after its requests: the proxy sees the end and closes too.
    client = await H11Client.open(proxy.port)
    response, _, _ = await client.request(b"GET", b"/then-leave")
    assert response.status_code == 200
    await client.aclose()
    await _all_ended(proxy)
    assert host.tasks == tasks  # neither ever had a task
    assert (host.started, backend.connections) == (3, 1)
    assert [r.path for r in proxy.records[1:]] == [
        *(f"/k{i}" for i in range(5)),
        "/last",
        "/then-leave",
    ]
    readiness = existing_readiness()
    assert readiness is not None and (readiness.strays, readiness.failures) == (0, 0)


async def test_unread_input_after_the_last_response_lingers_in_a_task(
    nursery: trio.Nursery,
) -> None:
    proxy, host, _ = await _warmed(nursery, limits=HttpLimits(max_keepalive_requests=1))
    tasks = host.tasks
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    # The keep-alive cap closes after one request, and another is already behind it: closing
    # at once could reset the answer in flight, so the proxy half-closes and reads on.
    await stream.send_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")
    data, ending = await _read_to_end(stream)
    assert data.startswith(b"HTTP/1.1 200 ") and data.count(b"HTTP/1.1") == 1
    assert ending == "fin"
    assert host.tasks == tasks + 1  # its end waited in a task of its own
    assert host.ended == host.started - 1  # ... still lingering: our close ends that
    await stream.aclose()
    await _all_ended(proxy)


async def test_the_hosts_cut_ends_a_connection_parked_without_a_task(
    nursery: trio.Nursery,
) -> None:
    gate = trio.Event()
    proxy, host, backend = await _warmed(nursery, gated_handler(gate))
    tasks = host.tasks
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    await stream.send_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
    with trio.fail_after(5):
        while len(backend.requests) < 2:  # the request waits on the pooled upstream
            await trio.sleep(0.01)
    assert host.tasks == tasks and len(host.live_scopes) == 1
    for connection in list(host.live_scopes):  # the worker's drain deadline
        connection.cancel()
    data, _ = await _read_to_end(stream)
    assert data == b""  # cut: no answer was on its way
    await _all_ended(proxy)
    assert host.tasks == tasks + 1  # the cut gave it a task, where the cancellation ended it
    gate.set()
    await stream.aclose()
    client = await H11Client.open(proxy.port)  # the listener serves on
    response, _, _ = await client.request(b"GET", b"/after")
    assert response.status_code == 200
    await client.aclose()
    await _all_ended(proxy)


async def test_a_bug_in_a_connection_without_a_task_is_reported_and_ends_it_only(
    nursery: trio.Nursery,
) -> None:
    proxy, host, _ = await _warmed(nursery)
    host.raise_failures = False
    other = await H11Client.open(proxy.port)
    response, _, _ = await other.request(b"GET", b"/other")
    assert response.status_code == 200

    def record(r: RequestRecord) -> None:
        if r.path == "/boom":
            raise RuntimeError("a bug in the record hook")
        proxy.records.append(r)

    proxy.ctx.on_request_done = record
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    await stream.send_all(b"GET /boom HTTP/1.1\r\nHost: a\r\n\r\n")
    data, _ = await _read_to_end(stream)  # its answer went out; the bug then ended it
    assert data.startswith(b"HTTP/1.1 200 ")
    with trio.fail_after(5):
        while not host.failures:
            await trio.sleep(0.01)
    assert [type(e) for e in host.failures] == [RuntimeError]
    response, _, _ = await other.request(b"GET", b"/still")  # the other connection is served
    assert response.status_code == 200
    await other.aclose()
    await stream.aclose()
    await _all_ended(proxy)
    assert [r.path for r in proxy.records] == ["/warm", "/other", "/still"]


class PingOrHttp:
    """A listener's second protocol for these tests: a connection opening with ``PING`` is
    answered ``PONG`` and closed (as the h1 listener serves HTTP/2 with prior knowledge)."""

    def __init__(self) -> None:
        self.served = 0

    def read_first(self, sock: trio.socket.SocketType) -> bytes | None:
        try:
            return os.read(sock.fileno(), 4096)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def classify(self, data: bytes) -> int:
        if b"PING".startswith(data):
            return OTHER if data == b"PING" else NOT_YET
        return HTTP1

    async def serve_other(self, stream: trio.SocketStream, client: str, first: bytes) -> None:
        self.served += 1
        assert first == b"PING"  # read while the connection was told apart
        await stream.send_all(b"PONG")


async def _late_first_bytes_proxy(
    nursery: trio.Nursery, limits: HttpLimits | None = None
) -> tuple[Proxy, TasklessHost, PingOrHttp, H11Backend]:
    proxy, host, backend = await _warmed(nursery, limits=limits)
    host.first = other = PingOrHttp()
    return proxy, host, other, backend


async def test_http11_bytes_that_come_late_are_awaited_on_the_dispatcher(
    nursery: trio.Nursery,
) -> None:
    proxy, host, other, _ = await _late_first_bytes_proxy(nursery)
    tasks = host.tasks
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    await trio.sleep(0.1)  # accepted with nothing to read yet
    client = H11Client(stream)
    for path in (b"/late", b"/next"):
        response, _, _ = await client.request(b"GET", path)
        assert response.status_code == 200
    await stream.send_all(b"GE")  # a request in pieces is HTTP/1.1 too
    await trio.sleep(0.05)
    await stream.send_all(b"T /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    data, ending = await _read_to_end(stream)
    assert data.startswith(b"HTTP/1.1 200 ") and ending == "fin"
    await stream.aclose()
    await _all_ended(proxy)
    assert (host.tasks, other.served) == (tasks, 0)  # served without a task
    assert [r.path for r in proxy.records[1:]] == ["/late", "/next", "/last"]


async def test_the_other_protocols_first_bytes_get_a_task_that_serves_it(
    nursery: trio.Nursery,
) -> None:
    proxy, host, other, _ = await _late_first_bytes_proxy(nursery)
    tasks = host.tasks
    for parts in ([b"PING"], [b"PI", b"NG"]):  # whole, or its start first
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        for part in parts:
            await trio.sleep(0.05)
            await stream.send_all(part)
        data, ending = await _read_to_end(stream)
        assert (data, ending) == (b"PONG", "fin")
        await stream.aclose()
    await _all_ended(proxy)
    assert (host.tasks, other.served) == (tasks + 2, 2)
    assert len(proxy.records) == 1  # the warm-up only: no HTTP/1.1 request was seen


async def test_a_client_that_sends_nothing_is_closed_without_a_word(
    nursery: trio.Nursery,
) -> None:
    proxy, host, other, _ = await _late_first_bytes_proxy(
        nursery, HttpLimits(header_timeout_ms=200)
    )
    tasks = host.tasks
    silent = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    started = trio.current_time()
    data, ending = await _read_to_end(silent)
    assert (data, ending) == (b"", "fin")  # no 408: it never began a request
    assert 0.15 <= trio.current_time() - started <= 3.0
    await silent.aclose()
    leaving = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    await trio.sleep(0.05)
    await leaving.aclose()  # gone before a byte: closed on the dispatcher
    await _all_ended(proxy)
    assert host.tasks == tasks + 1  # the lapse's (where the silent one's wait was cancelled)
    assert (len(proxy.records), other.served) == (1, 0)
