"""A raw HTTP/2 attacker over a plain blocking socket: well-formed frames from the h2 library
in client mode, malformed or flooding frames hand-built with hyperframe, and a reader that
parses whatever the gateway sends back with hyperframe (never with h2, whose state machine
would refuse to follow an attack).

Owns nothing of the gateway; it only records what came back: GOAWAY (code, last stream),
RST_STREAM per stream, response statuses, DATA per stream, PING acks and the close.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.settings
import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# RFC 9113 §7 error codes the tests assert.
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
CANCEL = 0x8
REFUSED_STREAM = 0x7
ENHANCE_YOUR_CALM = 0xB


def request_headers(
    path: str = "/headers", method: str = "GET", extra: list[tuple[bytes, bytes]] | None = None
) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", method.encode()),
        (b":scheme", b"http"),
        (b":authority", b"gateway.test"),
        (b":path", path.encode()),
        *(extra or []),
    ]


@dataclass
class Seen:
    """What the gateway sent on one connection."""

    goaway: tuple[int, int] | None = None  # (error code, last stream id)
    resets: dict[int, int] = field(default_factory=dict)  # stream id -> error code
    statuses: dict[int, int] = field(default_factory=dict)  # stream id -> :status
    data: dict[int, int] = field(default_factory=dict)  # stream id -> DATA bytes
    ended: set[int] = field(default_factory=set)  # streams the gateway ended (END_STREAM)
    ping_acks: int = 0
    pings: int = 0  # the gateway's keep-alive PINGs
    settings: list[dict[int, int]] = field(default_factory=list)
    closed: bool = False  # EOF (or reset) from the gateway
    closed_at: float | None = None


class RawH2:
    """One attacking connection. ``h2`` builds frames (its outbound validation is off, so it
    also encodes forbidden headers); ``send_frame`` sends anything hyperframe can build."""

    def __init__(
        self, port: int, *, settings: dict[int, int] | None = None, answer_pings: bool = False
    ) -> None:
        self.answer_pings = answer_pings
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = h2.connection.H2Connection(config)
        if settings:  # in the preface's SETTINGS frame, so they apply from the first request
            self.h2.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        self.h2.initiate_connection()
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 24
        self.seen = Seen()
        self.rst_count = 0  # RST_STREAM frames received (resets keeps the last per stream)
        self._buffer = b""
        self.flush()

    # ---- sending ----

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.send(data)

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self._closed()

    def send_frame(self, frame: Frame) -> None:
        self.send(frame.serialize())

    def headers(self, stream_id: int, headers: list[tuple[bytes, bytes]], *, end: bool) -> None:
        self.h2.send_headers(stream_id, headers, end_stream=end)
        self.flush()

    def encode(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        """A header block from h2's own encoder (its dynamic table stays in step)."""
        return self.h2.encoder.encode(headers)

    def headers_frame(self, stream_id: int, block: bytes, *, end_headers: bool) -> HeadersFrame:
        f = HeadersFrame(stream_id, data=block)
        if end_headers:
            f.flags.add("END_HEADERS")
        return f

    def continuation(self, stream_id: int, block: bytes, *, end_headers: bool) -> Frame:
        f = ContinuationFrame(stream_id, data=block)
        if end_headers:
            f.flags.add("END_HEADERS")
        return f

    def data_frame(self, stream_id: int, data: bytes, *, end: bool = False) -> DataFrame:
        f = DataFrame(stream_id, data=data)
        if end:
            f.flags.add("END_STREAM")
        return f

    def rst(self, stream_id: int, code: int = CANCEL) -> Frame:
        return RstStreamFrame(stream_id, error_code=code)

    # ---- reading ----

    def pump(self, timeout_s: float = 0.0) -> bool:
        """Read what is there (waiting up to ``timeout_s`` for the first bytes); False at EOF."""
        if self.seen.closed:
            return False
        self.sock.settimeout(timeout_s if timeout_s > 0 else 0.0001)
        try:
            data = self.sock.recv(1 << 20)
        except (TimeoutError, BlockingIOError):
            return True
        except (ConnectionResetError, OSError):
            data = b""
        if not data:
            self._closed()
            return False
        self._buffer += data
        self._parse()
        return True

    def wait_for(self, done: Callable[[Seen], bool], timeout_s: float = 5.0) -> Seen:
        """Read until ``done(seen)`` or EOF or the timeout; returns what was seen."""
        deadline = time.monotonic() + timeout_s
        while not done(self.seen) and time.monotonic() < deadline:
            if not self.pump(min(0.2, max(0.001, deadline - time.monotonic()))):
                break
        return self.seen

    def wait_closed(self, timeout_s: float = 5.0) -> Seen:
        return self.wait_for(lambda s: s.closed, timeout_s)

    def _closed(self) -> None:
        if not self.seen.closed:
            self.seen.closed = True
            self.seen.closed_at = time.monotonic()

    def _parse(self) -> None:
        while len(self._buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self._buffer[:9]))
            if len(self._buffer) < 9 + length:
                return
            frame.parse_body(memoryview(self._buffer[9 : 9 + length]))
            self._buffer = self._buffer[9 + length :]
            self._on_frame(frame)

    def _on_frame(self, frame: Frame) -> None:
        seen = self.seen
        sid = frame.stream_id
        if isinstance(frame, GoAwayFrame):
            seen.goaway = (frame.error_code, frame.last_stream_id)
        elif isinstance(frame, RstStreamFrame):
            seen.resets[sid] = frame.error_code
            self.rst_count += 1
        elif isinstance(frame, HeadersFrame):
            # Our SETTINGS keep responses small enough for one HEADERS frame.
            for name, value in self.decoder.decode(frame.data, raw=True):
                if name == b":status" and int(value) >= 200:
                    seen.statuses[sid] = int(value)
            if "END_STREAM" in frame.flags:
                seen.ended.add(sid)
        elif isinstance(frame, DataFrame):
            seen.data[sid] = seen.data.get(sid, 0) + len(frame.data)
            if "END_STREAM" in frame.flags:
                seen.ended.add(sid)
        elif isinstance(frame, PingFrame):
            if "ACK" in frame.flags:
                seen.ping_acks += 1
            else:
                seen.pings += 1
                if self.answer_pings:
                    self.send_frame(PingFrame(0, flags=["ACK"], opaque_data=frame.opaque_data))
        elif isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
            seen.settings.append(dict(frame.settings))
            self.send_frame(SettingsFrame(0, flags=["ACK"]))

    def close(self) -> None:
        self.sock.close()
