"""Peers of the WebSocket-over-HTTP/2 tests: the HTTP/2 front in process with H1 and H2 back
adapters, WebSocket backends (trio-websocket over HTTP/1.1, the echo backend of the
in-process H1 WebSocket tests; hypercorn over h2c with RFC 8441), and a client built on h2 +
wsproto that opens extended CONNECT streams. Must never listen anywhere but 127.0.0.1."""

from __future__ import annotations

import collections
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import trio
import trio_websocket
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from wsproto.connection import Connection, ConnectionType
from wsproto.events import Event as WsEvent

from gateway.http.limits import H2Limits, HttpLimits
from tools.ports import free_port
from workers.http.back import BackAdapter
from workers.http.context import ProxyContext
from workers.http.front import ClientConn
from workers.http.h1_back import H1Back
from workers.http.h2_back import H2Back
from workers.http.h2_front import serve_h2_connection
from workers.http.h2_upstream_protocol import UpstreamH2
from workers.http1 import Backend, RequestRecord

BIG_MESSAGE_BYTES = 1 << 24


# --- the gateway side ---------------------------------------------------------------------


@dataclass
class WsProxy:
    ctx: ProxyContext
    port: int
    records: list[RequestRecord] = field(default_factory=list)


async def start_ws_proxy(
    nursery: trio.Nursery,
    backends: list[tuple[str, int]],
    limits: HttpLimits | None = None,
    h2_limits: H2Limits | None = None,
) -> WsProxy:
    """The HTTP/2 front over ``backends`` ((protocol, port), tried in this order)."""
    limits = limits or HttpLimits()
    h2_back = H2Back(limits)
    await nursery.start(h2_back.serve)
    adapters: dict[str, BackAdapter] = {"h1": H1Back(limits), "h2": h2_back}
    targets = [Backend(f"b{i}", "127.0.0.1", port) for i, (_, port) in enumerate(backends)]
    records: list[RequestRecord] = []

    def pick(head: object, client: str, tried: list[Backend]) -> Backend | None:
        return next((t for t in targets if t not in tried), None)

    ctx = ProxyContext(
        listener="test",
        pick_backend=pick,
        back_for={t.id: adapters[proto] for t, (proto, _) in zip(targets, backends, strict=True)},
        limits=limits,
        on_request_done=records.append,
    )

    async def handle(stream: trio.SocketStream) -> None:
        await serve_h2_connection(ClientConn(stream, "127.0.0.1"), ctx, h2_limits or H2Limits())

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, handle, listeners)
    return WsProxy(ctx, listeners[0].socket.getsockname()[1], records)


# --- backends -----------------------------------------------------------------------------


@dataclass
class WsBackend:
    port: int
    requests: list[trio_websocket.WebSocketRequest] = field(default_factory=list)
    received: list[str | bytes] = field(default_factory=list)
    closed_with: list[int | None] = field(default_factory=list)


async def start_ws_backend(nursery: trio.Nursery) -> WsBackend:
    """trio-websocket (wsproto) over HTTP/1.1: echoes every message with its type; the text
    ``close N`` makes it close with code N."""
    backend = WsBackend(0)

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        backend.requests.append(request)
        ws = await request.accept()
        try:
            while True:
                message = await ws.get_message()
                backend.received.append(message)
                if isinstance(message, str) and message.startswith("close "):
                    await ws.aclose(code=int(message.split()[1]), reason="backend says bye")
                    return
                await ws.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            backend.closed_with.append(exc.reason.code)

    server = await nursery.start(
        functools.partial(
            trio_websocket.serve_websocket,
            handler,
            "127.0.0.1",
            0,
            ssl_context=None,
            max_message_size=BIG_MESSAGE_BYTES,
            receive_buffer_size=65536,
        )
    )
    backend.port = server.port
    return backend


async def _asgi_ws_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """hypercorn's app: a WebSocket echo (``close N`` closes with N); HTTP answers 200."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"plain http"})
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept", "headers": [(b"x-http-version", b"2")]})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is not None and text.startswith("close "):
            await send({"type": "websocket.close", "code": int(text.split()[1])})
            return
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


@asynccontextmanager
async def hypercorn_ws_backend() -> AsyncIterator[int]:
    """hypercorn (h2c prior knowledge; it announces SETTINGS_ENABLE_CONNECT_PROTOCOL)."""
    port = free_port()
    config = HypercornConfig()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.1
    config.websocket_max_message_size = BIG_MESSAGE_BYTES
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: hypercorn_serve(
                _asgi_ws_echo, config, shutdown_trigger=shutdown.wait, task_status=task_status
            )
        )
        try:
            yield port
        finally:
            shutdown.set()


# --- the client ---------------------------------------------------------------------------


class StreamGone(Exception):
    """The stream ended (END_STREAM or RST_STREAM) while a WebSocket event was awaited."""


@dataclass
class ClientStream:
    head: dict[bytes, bytes] | None = None
    body: bytes = b""
    ws: Connection | None = None
    events: collections.deque[WsEvent] = field(default_factory=collections.deque)
    ended: bool = False
    reset: int | None = None

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class H2WsClient:
    """h2 in the client role, opening WebSocket streams by extended CONNECT (RFC 8441) and
    speaking WebSocket on them with wsproto (frames only: the handshake is HTTP/2's)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        # GOAWAY-tolerant (a drain's first GOAWAY lets streams finish; plain h2 would not).
        self.h2 = UpstreamH2(config)
        self.h2.initiate_connection()
        self.server_settings: dict[int, int] | None = None
        self.streams: dict[int, ClientStream] = {}
        self.closed = False

    @classmethod
    async def open(cls, port: int) -> H2WsClient:
        client = cls(await trio.open_tcp_stream("127.0.0.1", port))
        await client.flush()
        while client.server_settings is None:
            await client.read()
        return client

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def read(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            self.closed = True
            raise StreamGone("connection closed")
        for event in self.h2.receive_data(data):
            self._on_event(event)
        await self.flush()

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged) and self.server_settings is None:
            self.server_settings = {int(k): v.new_value for k, v in event.changed_settings.items()}
        st = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if st is None:
            return
        if isinstance(event, h2.events.ResponseReceived):
            st.head = dict(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            tunnel = st.ws is not None and st.head is not None and st.head[b":status"] == b"200"
            if tunnel and event.data:
                assert st.ws is not None
                st.ws.receive_data(event.data)
                st.events.extend(st.ws.events())
            else:
                st.body += event.data
        elif isinstance(event, h2.events.StreamEnded):
            st.ended = True
        elif isinstance(event, h2.events.StreamReset):
            st.reset = int(event.error_code)

    async def connect(
        self, path: str = "/chat", *, protocol: bytes = b"websocket", headers: list | None = None
    ) -> int:
        """Send an extended CONNECT; returns the stream id once it was answered or ended."""
        sid = self.h2.get_next_available_stream_id()
        fields = [
            (b":method", b"CONNECT"),
            (b":protocol", protocol),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", b"localhost"),
            (b"sec-websocket-version", b"13"),
            *(headers or []),
        ]
        self.streams[sid] = ClientStream(ws=Connection(ConnectionType.CLIENT))
        self.h2.send_headers(sid, fields)
        await self.flush()
        st = self.streams[sid]
        while st.head is None and not st.done:
            await self.read()
        return sid

    async def get(self, path: str) -> ClientStream:
        sid = self.h2.get_next_available_stream_id()
        fields = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", path.encode())]
        self.streams[sid] = st = ClientStream()
        self.h2.send_headers(sid, [*fields, (b":authority", b"localhost")], end_stream=True)
        await self.flush()
        while not st.done:
            await self.read()
        return st

    async def send(self, sid: int, event: WsEvent) -> None:
        ws = self.streams[sid].ws
        assert ws is not None
        await self.send_bytes(sid, ws.send(event))

    async def send_bytes(self, sid: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            window = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            if window <= 0:
                await self.read()  # WINDOW_UPDATE (and whatever else comes)
                continue
            self.h2.send_data(sid, bytes(view[:window]))
            view = view[window:]
            await self.flush()

    async def next_event(self, sid: int) -> WsEvent:
        st = self.streams[sid]
        while not st.events:
            if st.done:
                raise StreamGone(f"stream {sid} ended (reset={st.reset})")
            await self.read()
        return st.events.popleft()

    async def until_done(self, sid: int) -> ClientStream:
        st = self.streams[sid]
        while not st.done:
            await self.read()
        return st

    def end(self, sid: int) -> None:
        self.h2.end_stream(sid)
