"""The HTTP/2 front in process, for tests: serve_h2_connection on a loopback listener with
H1 backends (tests/workers/http1/h1_peers), and an h2-library client over a trio stream."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import trio

from gateway.http.limits import H2Limits, HttpLimits
from workers.http.context import ProxyContext
from workers.http.front import ClientConn
from workers.http.h1_back import H1Back
from workers.http.h2_front import serve_h2_connection
from workers.http1 import Backend, RequestRecord

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "http1"))
from h1_peers import BackendPeer, H11Backend, start_backend

__all__ = ["BackendPeer", "H2Client", "H2Proxy", "start_backend", "start_h2_proxy"]


@dataclass
class H2Proxy:
    ctx: ProxyContext
    port: int
    records: list[RequestRecord] = field(default_factory=list)


async def start_h2_proxy(
    nursery: trio.Nursery,
    backends: list[H11Backend],
    limits: HttpLimits | None = None,
    h2_limits: H2Limits | None = None,
) -> H2Proxy:
    targets = [Backend(f"b{i}", "127.0.0.1", b.port) for i, b in enumerate(backends)]
    limits = limits or HttpLimits()
    back = H1Back(limits)
    records: list[RequestRecord] = []

    def pick(head: object, client: str, tried: object = ()) -> Backend | None:
        return targets[len(records) % len(targets)] if targets else None

    ctx = ProxyContext(
        listener="test",
        pick_backend=pick,
        back_for={t.id: back for t in targets},
        limits=limits,
        on_request_done=records.append,
    )

    async def handle(stream: trio.SocketStream) -> None:
        await serve_h2_connection(ClientConn(stream, "127.0.0.1"), ctx, h2_limits or H2Limits())

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, handle, listeners)
    return H2Proxy(ctx, listeners[0].socket.getsockname()[1], records)


class H2Client:
    """h2 in the client role; ``request`` sends one and collects its response."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.events: dict[int, list[h2.events.Event]] = {}

    @classmethod
    async def open(cls, port: int) -> H2Client:
        client = cls(await trio.open_tcp_stream("127.0.0.1", port))
        await client.flush()
        return client

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def send_request(
        self,
        path: str,
        *,
        method: str = "GET",
        body: bytes = b"",
        trailers: list[tuple[str, str]] | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", "http"), (":authority", "t"), (":path", path)]
        end = not body and not trailers
        self.conn.send_headers(sid, fields + (headers or []), end_stream=end)
        if body:
            self.conn.send_data(sid, body, end_stream=not trailers)
        if trailers:
            self.conn.send_headers(sid, trailers, end_stream=True)
        self.events[sid] = []
        await self.flush()
        return sid

    async def response(self, sid: int) -> tuple[dict[bytes, bytes], bytes, dict[bytes, bytes]]:
        """(head fields, body, trailer fields) once the stream ended."""
        while not any(
            isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) for e in self.events[sid]
        ):
            data = await self.stream.receive_some(65536)
            if not data:
                raise AssertionError("connection closed")
            for event in self.conn.receive_data(data):
                stream_id = getattr(event, "stream_id", None)
                if stream_id in self.events:
                    self.events[stream_id].append(event)
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
            await self.flush()
        head: dict[bytes, bytes] = {}
        trailers: dict[bytes, bytes] = {}
        body = b""
        for e in self.events[sid]:
            if isinstance(e, h2.events.ResponseReceived):
                head = dict(e.headers)
            elif isinstance(e, h2.events.TrailersReceived):
                trailers = dict(e.headers)
            elif isinstance(e, h2.events.DataReceived):
                body += e.data
            elif isinstance(e, h2.events.StreamReset):
                head[b"reset"] = str(e.error_code).encode()
        return head, body, trailers
