"""WebSocket over HTTP/3 (RFC 9220) through the real gateway (supervisor and worker
processes, the config file): an aioquic client speaking WebSocket frames with wsproto on an
extended CONNECT stream of a `quic` listener, the `websockets` echo backend of the HTTP/1.1
WebSocket tests behind it, the tunnel's limits as over HTTP/1.1 and HTTP/2 (the idle close),
and `[listeners.h3] enable_connect_protocol = false` turning it off (no setting; the stream
is malformed: H3_MESSAGE_ERROR, the connection serves on)."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection, Setting
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset
from running_gateway import RunningGateway, free_port, wait_for_port
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.events import Event as WsEvent

from tools.make_certs import make_certs

ECHO_BACKEND = Path(__file__).resolve().parents[2] / "http1" / "ws_echo_backend.py"
_WAIT_S = 10.0


@dataclass
class _Stream:
    status: int | None = None
    body: bytes = b""
    ws: Connection | None = None
    events: list[WsEvent] = field(default_factory=list)
    ended: bool = False
    reset: int | None = None


class H3WsClient(QuicConnectionProtocol):
    """aioquic's H3 in the client role, opening WebSocket streams by extended CONNECT
    (RFC 9220) and speaking WebSocket on them with wsproto (frames only)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.streams: dict[int, _Stream] = {}
        self.closed: ConnectionTerminated | None = None
        self.changed = asyncio.Event()

    @property
    def server_settings(self) -> dict[int, int] | None:
        return self.h3._received_settings

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamReset) and event.stream_id in self.streams:
            self.streams[event.stream_id].reset = event.error_code
        if isinstance(event, ConnectionTerminated):
            self.closed = event
        for ev in self.h3.handle_event(event):
            self._h3(ev)
        self.changed.set()

    def _h3(self, ev: H3Event) -> None:
        st = self.streams.get(getattr(ev, "stream_id", -1))
        if st is None:
            return
        if isinstance(ev, HeadersReceived) and st.status is None:
            st.status = int(dict(ev.headers)[b":status"])
        elif isinstance(ev, DataReceived):
            if st.ws is not None and st.status == 200:
                if ev.data:  # the FIN comes as empty DATA, maybe past wsproto's close
                    st.ws.receive_data(ev.data)
                st.events.extend(st.ws.events())
            else:
                st.body += ev.data
        if getattr(ev, "stream_ended", False):
            st.ended = True

    async def until(self, done: Any) -> None:
        async with asyncio.timeout(_WAIT_S):
            while not done():
                if self.closed is not None:
                    raise ConnectionError(f"connection closed: {self.closed}")
                self.changed.clear()
                await self.changed.wait()

    def _open(self, fields: list[tuple[bytes, bytes]], st: _Stream, end: bool) -> int:
        sid = self._quic.get_next_available_stream_id()
        self.streams[sid] = st
        self.h3.send_headers(sid, fields, end_stream=end)
        self.transmit()
        return sid

    async def connect_ws(self, path: str, protocol: bytes = b"websocket") -> int:
        """An extended CONNECT; returns its stream id once answered or ended."""
        fields = [
            (b":method", b"CONNECT"),
            (b":protocol", protocol),
            (b":scheme", b"https"),
            (b":authority", b"localhost"),
            (b":path", path.encode()),
            (b"sec-websocket-version", b"13"),
        ]
        st = _Stream(ws=Connection(ConnectionType.CLIENT))
        sid = self._open(fields, st, end=False)
        await self.until(lambda: st.status is not None or st.ended or st.reset is not None)
        return sid

    async def get(self, path: str) -> _Stream:
        fields = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", b"localhost"),
            (b":path", path.encode()),
        ]
        st = _Stream()
        self._open(fields, st, end=True)
        await self.until(lambda: st.ended or st.reset is not None)
        return st

    def send(self, sid: int, event: WsEvent) -> None:
        ws = self.streams[sid].ws
        assert ws is not None
        self.h3.send_data(sid, ws.send(event), end_stream=False)
        self.transmit()

    async def next_event(self, sid: int) -> WsEvent:
        st = self.streams[sid]
        await self.until(lambda: st.events or st.ended or st.reset is not None)
        assert st.events, f"stream ended (reset={st.reset})"
        return st.events.pop(0)

    async def message(self, sid: int) -> str | bytes:
        parts: list[Any] = []
        while True:
            event = await self.next_event(sid)
            assert isinstance(event, (TextMessage, BytesMessage)), event
            parts.append(event.data)
            if event.message_finished:
                return "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)


def _gateway_config(certs: Any, ports: tuple[int, int, int], backend_port: int) -> str:
    listeners = ""
    for name, port, h3_table in (
        ("ws-h3-on", ports[0], ""),
        ("ws-h3-off", ports[1], "[listeners.h3]\nenable_connect_protocol = false\n"),
        ("ws-h3-idle", ports[2], "[listeners.websocket]\nidle_timeout_seconds = 1\n"),
    ):
        listeners += f"""
[[listeners]]
name = "{name}"
address = "127.0.0.1:{port}"
protocol = "quic"
[listeners.tls]
cert_path = "{certs.cert}"
key_path = "{certs.key}"
{h3_table}
[[listeners.backends]]
address = "127.0.0.1:{backend_port}"
protocol = "h1"
"""
    return f"""
[runtime]
workers = 1
drain_timeout_ms = 3000

[observability]
log_format = "json"
access_log = false
{listeners}
"""


@dataclass
class Site:
    ports: tuple[int, int, int]
    gateway: RunningGateway


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("wsh3")
    certs = make_certs(tmp / "certs")
    backend_port = free_port()
    backend = subprocess.Popen(
        [sys.executable, str(ECHO_BACKEND), str(backend_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ports = free_port(), free_port(), free_port()
    gateway = RunningGateway(tmp, _gateway_config(certs, ports, backend_port))
    try:
        wait_for_port(backend_port)
        gateway.start()
        yield Site(ports, gateway)
    finally:
        gateway.stop()
        backend.kill()
        backend.wait()


def _client_config() -> QuicConfiguration:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, idle_timeout=10.0)
    config.verify_mode = ssl.CERT_NONE
    config.server_name = "localhost"
    return config


def _run(port: int, scenario: Any) -> Any:
    async def main() -> Any:
        async with connect(
            "127.0.0.1", port, configuration=_client_config(), create_protocol=H3WsClient
        ) as client:
            assert isinstance(client, H3WsClient)
            await client.until(lambda: client.server_settings is not None)
            return await scenario(client)

    return asyncio.run(asyncio.wait_for(main(), 30))


def test_websocket_over_h3_through_the_gateway(site: Site) -> None:
    big = os.urandom(1 << 20)

    async def scenario(client: H3WsClient) -> None:
        assert client.server_settings is not None
        assert client.server_settings.get(Setting.ENABLE_CONNECT_PROTOCOL) == 1
        sid = await client.connect_ws("/echo")
        assert client.streams[sid].status == 200
        client.send(sid, TextMessage(data="hello"))
        assert await client.message(sid) == "hello"
        client.send(sid, BytesMessage(data=b"bin", message_finished=False))
        client.send(sid, BytesMessage(data=b"ary", message_finished=True))
        assert await client.message(sid) == b"binary"
        client.send(sid, BytesMessage(data=big))
        assert await client.message(sid) == big
        client.send(sid, Ping(payload=b"p"))
        pong = await client.next_event(sid)
        assert isinstance(pong, Pong) and pong.payload == b"p"
        client.send(sid, CloseConnection(code=4001, reason="bye"))
        close = await client.next_event(sid)
        assert isinstance(close, CloseConnection) and close.code == 4001
        st = client.streams[sid]
        await client.until(lambda: st.ended or st.reset is not None)
        assert st.ended and st.reset is None  # an orderly end (FIN), not a reset
        assert client.closed is None

    _run(site.ports[0], scenario)


def test_other_extended_connect_protocols_get_501(site: Site) -> None:
    async def scenario(client: H3WsClient) -> None:
        sid = await client.connect_ws("/echo", protocol=b"connect-udp")
        st = client.streams[sid]
        assert st.status == 501

    _run(site.ports[0], scenario)


def test_enable_connect_protocol_false_in_the_config(site: Site) -> None:
    async def scenario(client: H3WsClient) -> None:
        assert client.server_settings is not None
        assert Setting.ENABLE_CONNECT_PROTOCOL not in client.server_settings
        sid = await client.connect_ws("/echo")
        st = client.streams[sid]
        await client.until(lambda: st.reset is not None)
        assert st.status is None and st.reset == ErrorCode.H3_MESSAGE_ERROR
        plain = await client.get("/")  # the connection serves ordinary requests on
        assert plain.status is not None and client.closed is None

    _run(site.ports[1], scenario)


def test_an_idle_tunnel_is_closed_with_1001(site: Site) -> None:
    """`[listeners.websocket] idle_timeout_seconds` applies to an H3 tunnel as to an H1 one:
    a close frame 1001 to the client, then the stream's orderly end."""

    async def scenario(client: H3WsClient) -> float:
        sid = await client.connect_ws("/echo")
        client.send(sid, TextMessage(data="once"))
        assert await client.message(sid) == "once"
        started = asyncio.get_running_loop().time()
        close = await client.next_event(sid)
        assert isinstance(close, CloseConnection) and close.code == 1001
        st = client.streams[sid]
        await client.until(lambda: st.ended or st.reset is not None)
        assert st.ended and st.reset is None
        return asyncio.get_running_loop().time() - started

    assert 0.5 < _run(site.ports[2], scenario) < 5.0


def test_a_drain_closes_the_tunnel_with_1001_before_the_connection(site: Site) -> None:
    """`gatewayctl drain`: the tunnel lives through the drain budget, gets a close frame 1001
    at the deadline and its stream's orderly end, and only then the connection's
    CONNECTION_CLOSE (which would drop unsent stream data). Last in the module: the drained
    worker's replacement serves whatever comes after."""
    gw = site.gateway

    async def scenario(client: H3WsClient) -> tuple[float, int]:
        sid = await client.connect_ws("/echo")
        client.send(sid, TextMessage(data="before"))
        assert await client.message(sid) == "before"
        loop = asyncio.get_running_loop()
        # Answered once the replacement is ready and the drain has begun.
        drained = await loop.run_in_executor(None, lambda: gw.ctl("drain", "0", "--timeout", "1.5"))
        started = loop.time()
        assert drained.returncode == 0, drained.stderr
        client.send(sid, TextMessage(data="draining"))  # still served within the budget
        assert await client.message(sid) == "draining"
        close = await client.next_event(sid)
        assert isinstance(close, CloseConnection) and close.code == 1001
        waited = loop.time() - started
        st = client.streams[sid]
        async with asyncio.timeout(_WAIT_S):
            while not st.ended and st.reset is None and client.closed is None:
                client.changed.clear()
                await client.changed.wait()
        assert st.ended and st.reset is None  # the FIN came before any CONNECTION_CLOSE
        async with asyncio.timeout(_WAIT_S):
            while client.closed is None:
                client.changed.clear()
                await client.changed.wait()
        return waited, client.closed.error_code

    waited, code = _run(site.ports[0], scenario)
    assert 0.5 < waited < 3.0, f"1001 {waited:.2f}s after the drain began; budget 1.5 s"
    assert code == ErrorCode.H3_NO_ERROR
