"""Real peers for the H1 proxy tests: an h11 backend in a trio task, the proxy on loopback,
and h11/raw-socket clients."""

from __future__ import annotations

import functools
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import trio
import trio_websocket

from gateway.http.limits import HttpLimits
from workers.accepted_stream import accepted_stream
from workers.http1 import Backend, H1Context, RequestRecord, serve_h1_connection
from workers.http1.taskless import FirstBytes, start_taskless


class BackendPeer:
    """One backend connection as seen by a test handler."""

    def __init__(self, stream: trio.abc.Stream, conn: h11.Connection) -> None:
        self.stream = stream
        self.conn = conn
        self.trailers: list[tuple[bytes, bytes]] = []

    async def next_event(self) -> object:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(65536)
                self.conn.receive_data(data)
                continue
            return event

    async def read_body(self) -> bytes:
        parts = []
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self.trailers = [(bytes(n), bytes(v)) for n, v in event.headers]
                return b"".join(parts)
            else:
                raise AssertionError(f"unexpected {event!r}")

    async def send(self, *events: object) -> None:
        for event in events:
            data = self.conn.send(event)
            if data:
                await self.stream.send_all(data)

    async def respond(self, status: int, body: bytes = b"", headers: list | None = None) -> None:
        hdrs = list(headers or [])
        if not any(n.lower() in (b"content-length", b"transfer-encoding") for n, _ in hdrs):
            hdrs.append((b"content-length", str(len(body)).encode()))
        await self.send(h11.Response(status_code=status, headers=hdrs))
        if body:
            await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())


Handler = Callable[[BackendPeer, h11.Request], Awaitable[None]]


async def default_handler(peer: BackendPeer, req: h11.Request) -> None:
    body = await peer.read_body()
    await peer.respond(200, b"echo:" + body, [(b"x-target", req.target)])


def gated_handler(gate: trio.Event) -> Handler:
    """200 "ok" to every request; a request for /slow is answered only once ``gate`` is set."""

    async def handler(peer: BackendPeer, req: h11.Request) -> None:
        await peer.read_body()
        if req.target == b"/slow":
            await gate.wait()
        await peer.respond(200, b"ok")

    return handler


@dataclass
class H11Backend:
    handler: Handler = default_handler
    connections: int = 0
    requests: list[h11.Request] = field(default_factory=list)
    port: int = 0

    async def serve_conn(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=256 * 1024)
        peer = BackendPeer(stream, conn)
        try:
            while True:
                event = await peer.next_event()
                if isinstance(event, h11.ConnectionClosed):
                    return
                assert isinstance(event, h11.Request), event
                self.requests.append(event)
                await self.handler(peer, event)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            await trio.aclose_forcefully(stream)


async def start_backend(
    nursery: trio.Nursery, handler: Handler = default_handler, small_buffers: bool = False
) -> H11Backend:
    backend = H11Backend(handler)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    if small_buffers:
        for listener in listeners:
            shrink_buffers(listener.socket)
    nursery.start_soon(trio.serve_listeners, backend.serve_conn, listeners)
    backend.port = listeners[0].socket.getsockname()[1]
    return backend


# Which path start_proxy builds: "fast" (the dedicated H1 path, a task per connection),
# "taskless" (the same path, each connection started without a task, as the worker starts
# them: workers/http1/taskless.py) or "general" (the proxy core through
# workers/http/h1_front); conftest.py runs every test_h1_proxy_* test in all three.
PROXY_PATH = {"mode": "fast"}


class TasklessHost:
    """The worker's part for connections started without a task (``ConnectionHost``): their
    tasks, when they need one, run in the test's nursery; a connection's bug fails the test
    as an exception in ``trio.serve_listeners``' handler would."""

    made: list[TasklessHost] = []  # since the current test began (conftest checks them)

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.live_scopes: set[Any] = set()
        self.started = 0
        self.ended = 0
        self.tasks = 0  # tasks the connections asked for
        self.failures: list[BaseException] = []
        self.raise_failures = True  # False: only record them (a test that makes a bug)
        # Set: every connection's first bytes are awaited and told apart by it (as the
        # worker does for those that have sent nothing when accepted).
        self.first: FirstBytes | None = None
        TasklessHost.made.append(self)

    def connection_task(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        self.tasks += 1
        self.nursery.start_soon(fn, *args)

    def connection_failed(self, token: Any, exc: BaseException) -> None:
        self.failures.append(exc)
        if not self.raise_failures:
            return

        async def fail() -> None:
            raise exc

        self.nursery.start_soon(fail)

    def connection_ended(self, token: Any) -> None:
        self.ended += 1

    async def serve(self, listener: trio.SocketListener, ctx: H1Context) -> None:
        """Accept and start each connection without a task; when the test's nursery is
        cancelled, cut those still open (each gets a task that ends with the nursery)."""
        try:
            while True:
                sock, addr = await listener.socket.accept()
                self.started += 1
                start_taskless(accepted_stream(sock), ctx, addr[0], self, addr, self.first)
        finally:
            for connection in list(self.live_scopes):
                connection.cancel()


def _general_hook(ctx: H1Context, targets: list[Backend]) -> None:
    from workers.http.context import ProxyContext
    from workers.http.h1_back import H1Back
    from workers.http.h1_front import general_exchange

    back = H1Back(ctx.limits, ctx.connect)
    proxy = ProxyContext(
        listener=ctx.listener,
        pick_backend=ctx.pick_backend,
        back_for={t.id: back for t in targets},
        limits=ctx.limits,
        on_request_done=ctx.on_request_done,
        on_backend_result=ctx.on_backend_result,
        draining=ctx.draining,
        rng=ctx.rng,
    )
    ctx.general = general_exchange(proxy)


@dataclass
class Proxy:
    ctx: H1Context
    port: int
    records: list[RequestRecord]
    results: list[tuple[str, bool, str]]
    taskless: TasklessHost | None = None


async def start_proxy(
    nursery: trio.Nursery,
    backends: list[H11Backend] | list[Backend] | None,
    limits: HttpLimits | None = None,
    small_buffers: bool = False,
    buffer_bytes: int = 0,
    **ctx_kwargs: object,
) -> Proxy:
    targets = [
        b if isinstance(b, Backend) else Backend(f"b{i}", "127.0.0.1", b.port)
        for i, b in enumerate(backends or [])
    ]
    counter = {"n": 0}

    def pick(head: object, client: str, tried: object = ()) -> Backend | None:
        if not targets:
            return None
        counter["n"] += 1
        return targets[(counter["n"] - 1) % len(targets)]

    records: list[RequestRecord] = []
    results: list[tuple[str, bool, str]] = []
    ctx = H1Context(
        listener="test",
        pick_backend=pick,
        limits=limits or HttpLimits(),
        on_request_done=records.append,
        on_backend_result=lambda b, ok, kind, lat: results.append((b.id, ok, kind)),
        **ctx_kwargs,  # type: ignore[arg-type]
    )
    if PROXY_PATH["mode"] == "general":
        _general_hook(ctx, targets)

    async def handle(stream: trio.SocketStream) -> None:
        await serve_h1_connection(stream, ctx)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    if small_buffers:
        for listener in listeners:  # accepted sockets inherit these
            shrink_buffers(listener.socket, buffer_bytes or SMALL_BUFFER_BYTES)
    host = None
    if PROXY_PATH["mode"] == "taskless" and ctx.resident:
        host = TasklessHost(nursery)
        for listener in listeners:
            nursery.start_soon(host.serve, listener, ctx)
    else:
        nursery.start_soon(trio.serve_listeners, handle, listeners)
    return Proxy(ctx, listeners[0].socket.getsockname()[1], records, results, host)


SMALL_BUFFER_BYTES = 32 * 1024


def shrink_buffers(sock: trio.socket.SocketType, size: int = SMALL_BUFFER_BYTES) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


async def open_small_buffer_stream(port: int) -> trio.SocketStream:
    sock = trio.socket.socket()
    shrink_buffers(sock)
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


async def small_buffer_connect(backend: Backend) -> trio.abc.Stream:
    return await open_small_buffer_stream(backend.port)


class H11Client:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int) -> H11Client:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def next_event(self) -> object:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
                continue
            return event

    async def send(self, *events: object) -> None:
        for event in events:
            data = self.conn.send(event)
            if data:
                await self.stream.send_all(data)

    async def read_response(self) -> tuple[h11.Response, bytes, list]:
        response = None
        parts = []
        while True:
            event = await self.next_event()
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                return response, b"".join(parts), list(event.headers)
            else:
                raise AssertionError(f"unexpected {event!r}")

    async def request(
        self, method: bytes, target: bytes, headers: list | None = None, body: bytes | None = None
    ) -> tuple[h11.Response, bytes, list]:
        hdrs = [(b"host", b"example.test"), *(headers or [])]
        if body is not None and not any(n.lower() == b"transfer-encoding" for n, _ in hdrs):
            hdrs.append((b"content-length", str(len(body)).encode()))
        await self.send(h11.Request(method=method, target=target, headers=hdrs))
        if body:
            await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())
        result = await self.read_response()
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return result

    async def aclose(self) -> None:
        await self.stream.aclose()


async def raw_exchange(port: int, data: bytes, timeout_s: float = 5.0) -> tuple[bytes, bool]:
    """Send raw bytes, read until the proxy closes; (bytes read, closed by peer)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    out = bytearray()
    closed = False
    with trio.move_on_after(timeout_s):
        await stream.send_all(data)
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            out += chunk
    await stream.aclose()
    return bytes(out), closed


async def _ws_echo(request: trio_websocket.WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except trio_websocket.ConnectionClosed:
        pass


async def start_ws_echo_backend(nursery: trio.Nursery, name: str = "ws") -> Backend:
    """A trio-websocket server echoing every message, on a fresh port, as a Backend."""
    server = await nursery.start(
        functools.partial(
            trio_websocket.serve_websocket, _ws_echo, "127.0.0.1", 0, ssl_context=None
        )
    )
    return Backend(name, "127.0.0.1", server.port)
