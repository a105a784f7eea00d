"""gRPC over an HTTP/3 front to an HTTP/2 gRPC backend (a real grpcio server).

grpcio speaks no HTTP/3, so the client is aioquic's H3 layer sending what a gRPC client
sends: POST, ``content-type: application/grpc``, ``te: trailers``, optionally
``grpc-timeout``, and length-prefixed messages (the test.Echo service of grpc_peers takes
and returns raw bytes). What comes back is read frame by frame: the response HEADERS, the
messages, the trailers; a trailers-only answer must be one HEADERS frame that ends the
stream. Covered: a unary call with its custom trailing metadata, request metadata reaching
the backend, a 3000-message server
stream, a deadline expiring (DEADLINE_EXCEEDED, the backend's call cancelled), a backend
error status relayed, and a dead backend (trailers-only UNAVAILABLE from the gateway).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset
from grpc_peers import SERVICE, EchoBackend, wait_until
from running_gateway import RunningGateway, free_port

from tools.make_certs import make_certs


@dataclass
class Call:
    """One call as the client saw it, frame by frame."""

    headers_frames: list[list[tuple[bytes, bytes]]] = field(default_factory=list)
    data: bytes = b""
    data_frames: int = 0
    done: asyncio.Future[None] | None = None

    @property
    def head(self) -> dict[bytes, bytes]:
        return dict(self.headers_frames[0])

    @property
    def trailers(self) -> dict[bytes, bytes]:
        """The trailers, or the head of a trailers-only answer."""
        return dict(self.headers_frames[-1])

    @property
    def messages(self) -> list[bytes]:
        out, pos = [], 0
        while pos < len(self.data):
            compressed, length = struct.unpack_from(">BI", self.data, pos)
            assert compressed == 0
            out.append(self.data[pos + 5 : pos + 5 + length])
            pos += 5 + length
        assert pos == len(self.data), "a message cut short"
        return out


class GrpcH3Client(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.calls: dict[int, Call] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, (StreamReset, ConnectionTerminated)):
            for sid, call in self.calls.items():
                ours = getattr(event, "stream_id", sid) == sid  # a reset names one stream
                if ours and call.done is not None and not call.done.done():
                    call.done.set_exception(ConnectionError(f"{event!r}"))
        for ev in self.h3.handle_event(event):
            self._h3(ev)

    def _h3(self, ev: H3Event) -> None:
        call = self.calls.get(getattr(ev, "stream_id", -1))
        if call is None:
            return
        if isinstance(ev, HeadersReceived):
            call.headers_frames.append(list(ev.headers))
        elif isinstance(ev, DataReceived) and ev.data:
            call.data += ev.data
            call.data_frames += 1
        if getattr(ev, "stream_ended", False) and call.done is not None and not call.done.done():
            call.done.set_result(None)

    async def call(
        self,
        authority: str,
        method: str,
        message: bytes,
        *,
        timeout: str | None = None,
        wait_s: float = 15.0,
    ) -> Call:
        sid = self._quic.get_next_available_stream_id()
        call = Call(done=asyncio.get_running_loop().create_future())
        self.calls[sid] = call
        headers = [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", f"/{SERVICE}/{method}".encode()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"x-request-meta", b"from-h3"),
        ]
        if timeout is not None:
            headers.append((b"grpc-timeout", timeout.encode()))
        self.h3.send_headers(sid, headers)
        self.h3.send_data(sid, struct.pack(">BI", 0, len(message)) + message, end_stream=True)
        self.transmit()
        assert call.done is not None
        await asyncio.wait_for(call.done, wait_s)
        return call


def _config(certs: Any, ports: dict[str, int], backend: int, dead: int) -> str:
    def listener(name: str, target: int) -> str:
        return f"""
[[listeners]]
name = "{name}"
address = "127.0.0.1:{ports[name]}"
protocol = "quic"
[listeners.tls]
cert_path = "{certs.cert}"
key_path = "{certs.key}"
[listeners.outlier]
consecutive_failures = 1000
[[listeners.backends]]
address = "127.0.0.1:{target}"
protocol = "h2"
"""

    return (
        """
[runtime]
workers = 1

[observability]
log_format = "json"
"""
        + listener("grpc", backend)
        + listener("dead", dead)
    )


class Setup:
    def __init__(self, gateway: RunningGateway, ports: dict[str, int], backend: EchoBackend):
        self.gateway = gateway
        self.ports = ports
        self.backend = backend

    def run(self, listener: str, *calls: tuple[str, bytes, str | None]) -> list[Call]:
        """The calls one after another on one connection to ``listener``."""
        port = self.ports[listener]

        async def main() -> list[Call]:
            config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, idle_timeout=10)
            config.verify_mode = ssl.CERT_NONE
            config.server_name = "localhost"
            async with connect(
                "127.0.0.1", port, configuration=config, create_protocol=GrpcH3Client
            ) as c:
                assert isinstance(c, GrpcH3Client)
                return [
                    await c.call(f"127.0.0.1:{port}", method, message, timeout=timeout)
                    for method, message, timeout in calls
                ]

        return asyncio.run(asyncio.wait_for(main(), 30))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("grpc_h3")
    certs = make_certs(tmp / "certs")
    ports = {"grpc": free_port(socket.SOCK_DGRAM), "dead": free_port(socket.SOCK_DGRAM)}
    backend = EchoBackend(free_port()).start()
    gateway = RunningGateway(tmp, _config(certs, ports, backend.port, free_port()))
    try:
        gateway.start()
        yield Setup(gateway, ports, backend)
    finally:
        gateway.stop()
        backend.stop()


def test_unary_call_with_trailing_metadata(setup: Setup) -> None:
    (call,) = setup.run("grpc", ("Unary", b"hello over h3", None))
    assert call.head[b":status"] == b"200"
    assert call.head[b"content-type"] == b"application/grpc"
    assert call.messages == [b"hello over h3"]
    assert len(call.headers_frames) == 2  # response head, then the trailers
    assert call.trailers[b"grpc-status"] == b"0"
    assert call.trailers[b"x-trailer"] == b"t-value"
    assert call.trailers[b"x-bin-bin"].rstrip(b"=") == b"AAH/"  # base64 of 00 01 ff


def test_request_metadata_reaches_the_backend(setup: Setup) -> None:
    (call,) = setup.run("grpc", ("Meta", b"", None))
    (seen,) = call.messages
    assert b"x-request-meta=from-h3" in seen.split(b"\n")
    assert call.trailers[b"grpc-status"] == b"0"


def test_server_stream_of_three_thousand_messages(setup: Setup) -> None:
    (call,) = setup.run("grpc", ("ServerStream", b"3000:32", None))
    messages = call.messages
    assert len(messages) == 3000
    assert all(m == b"%08d" % i + b"x" * 32 for i, m in enumerate(messages))
    assert call.trailers[b"grpc-status"] == b"0"


def test_a_deadline_expiring_is_deadline_exceeded_and_cancels_the_backend_call(
    setup: Setup,
) -> None:
    seen = setup.backend.observed
    seen.cancelled.clear()
    before = len(seen.time_remaining)
    started = time.monotonic()
    (call,) = setup.run("grpc", ("Wait", b"x", "300m"))
    elapsed = time.monotonic() - started
    assert call.trailers[b"grpc-status"] == b"4"  # DEADLINE_EXCEEDED
    assert call.messages == []
    assert elapsed < 5
    # The backend was given what was left of the 300 ms and saw its call end early.
    assert len(seen.time_remaining) > before
    remaining = seen.time_remaining[-1]
    assert remaining is not None and remaining <= 0.3
    assert wait_until(seen.cancelled.is_set, 12)


def test_a_backend_error_status_is_relayed_as_one_headers_frame(setup: Setup) -> None:
    (call,) = setup.run("grpc", ("Unary", b"fail:precondition 42", None))
    # grpcio answers an aborted call trailers-only: one HEADERS frame ending the stream.
    assert len(call.headers_frames) == 1 and call.data_frames == 0
    assert call.head[b":status"] == b"200"
    assert call.trailers[b"grpc-status"] == b"9"  # FAILED_PRECONDITION
    assert call.trailers[b"grpc-message"] == b"precondition 42"
    assert call.trailers[b"x-why"] == b"asked-to-fail"
    assert b"content-length" not in call.head


def test_a_dead_backend_is_a_trailers_only_unavailable(setup: Setup) -> None:
    calls = setup.run("dead", ("Unary", b"a", None), ("Unary", b"b", None))
    for call in calls:
        assert len(call.headers_frames) == 1 and call.data_frames == 0
        assert call.head[b":status"] == b"200"
        assert call.head[b"content-type"] == b"application/grpc"
        assert call.trailers[b"grpc-status"] == b"14"  # UNAVAILABLE
        assert b"content-length" not in call.head
    # The connection that got those still serves a call to a live listener afterwards.
    (ok,) = setup.run("grpc", ("Unary", b"still here", None))
    assert ok.messages == [b"still here"]
