"""The gRPC health probe's protocol side: one ``grpc.health.v1.Health/Check`` call over HTTP/2.

Owns the call (preface and SETTINGS, HEADERS and one length-prefixed HealthCheckRequest on
stream 1), the few protobuf bytes it needs, written by hand (the request is field 1, the
service name, a string; the response is field 1, the serving status, an enum), and the
verdict: SERVING with grpc-status 0 passes; NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN, any
other grpc-status, a reset or a malformed answer fail. Must never touch sockets, TLS or
clocks: the supervisor's prober does the I/O, as for the HTTP/2 probe (h2_probe.py).
"""

from __future__ import annotations

from typing import Any, Final

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

_STREAM_ID: Final = 1
_PATH: Final = b"/grpc.health.v1.Health/Check"
_MAX_HEADER_BYTES: Final = 16 * 1024
# A HealthCheckResponse is a few bytes; anything past this is not one.
_MAX_RESPONSE_BYTES: Final = 4096
SERVING_STATUS_NAMES: Final = ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")
SERVING: Final = 1


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def check_request_message(service: str) -> bytes:
    """A length-prefixed HealthCheckRequest{service} (gRPC framing: 0 = not compressed)."""
    name = service.encode("utf-8")
    proto = b"\x0a" + _varint(len(name)) + name if name else b""
    return b"\x00" + len(proto).to_bytes(4, "big") + proto


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while at < len(data) and shift < 64:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
    raise ValueError("truncated varint")


def serving_status(message: bytes) -> int:
    """The ``status`` field of a HealthCheckResponse body (0 when absent: proto3 default);
    unknown fields are skipped as protobuf requires. Raises ValueError when malformed."""
    at = 0
    status = 0
    while at < len(message):
        key, at = _read_varint(message, at)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _read_varint(message, at)
            if field == 1:
                status = value
        elif wire == 2:
            size, at = _read_varint(message, at)
            at += size
        elif wire == 1:
            at += 8
        elif wire == 5:
            at += 4
        else:
            raise ValueError(f"wire type {wire}")
    if at != len(message):
        raise ValueError("truncated field")
    return status


def unframe(data: bytes) -> bytes:
    """The one message of a gRPC body (5-byte prefix: flag, big-endian length)."""
    if len(data) < 5:
        raise ValueError("short message prefix")
    if data[0] != 0:
        raise ValueError("compressed message")
    size = int.from_bytes(data[1:5], "big")
    if len(data) != 5 + size:
        raise ValueError(f"message of {len(data) - 5} bytes, prefix says {size}")
    return data[5:]


class GrpcHealthProbe:
    """One probe's HTTP/2 client state: ``start`` → send; ``receive`` until ``done``;
    ``problem`` is then '' for SERVING, else the reason."""

    def __init__(self, *, scheme: bytes, authority: bytes, service: str) -> None:
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self._conn: Any = h2.connection.H2Connection(config)
        self._conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: _MAX_HEADER_BYTES,
            },
        )
        self._conn.decoder.max_header_list_size = _MAX_HEADER_BYTES
        self._request = [
            (b":method", b"POST"),
            (b":scheme", scheme),
            (b":authority", authority),
            (b":path", _PATH),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"user-agent", b"expressgateway-health"),
        ]
        self._message = check_request_message(service)
        self._body = bytearray()
        self._grpc_status: bytes | None = None
        self._http_status = 0
        self.problem = ""
        self.done = False

    def start(self) -> bytes:
        self._conn.initiate_connection()
        self._conn.send_headers(_STREAM_ID, self._request)
        self._conn.send_data(_STREAM_ID, self._message, end_stream=True)
        return bytes(self._conn.data_to_send())

    def receive(self, data: bytes) -> bytes:
        """Feed the backend's bytes (b"" at EOF); returns what to send back."""
        if not data:
            self._fail("closed before the call ended")
            return b""
        try:
            events = self._conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._fail(f"bad response: {exc}")
            return bytes(self._conn.data_to_send())
        for event in events:
            self._on_event(event)
        return bytes(self._conn.data_to_send())

    def _fail(self, problem: str) -> None:
        if not self.done:
            self.problem = problem
            self.done = True

    def _on_event(self, event: Any) -> None:
        if self.done:
            return
        if getattr(event, "stream_id", _STREAM_ID) != _STREAM_ID:
            return
        if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
            self._on_fields(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            self._conn.acknowledge_received_data(event.flow_controlled_length, _STREAM_ID)
            self._body += event.data
            if len(self._body) > _MAX_RESPONSE_BYTES:
                self._fail("response message too large")
        elif isinstance(event, h2.events.StreamEnded):
            self._verdict()
        elif isinstance(event, h2.events.StreamReset):
            self._fail(f"stream reset by the backend (code {int(event.error_code or 0)})")
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._fail(f"GOAWAY before the call ended (code {int(event.error_code or 0)})")

    def _on_fields(self, headers: list[tuple[bytes, bytes]]) -> None:
        for name, value in headers:
            if name == b":status":
                raw = bytes(value)
                self._http_status = int(raw) if raw.isdigit() else -1
            elif name == b"grpc-status":
                self._grpc_status = bytes(value)

    def _verdict(self) -> None:
        if self._http_status != 200:
            self._fail(f"HTTP status {self._http_status}")
            return
        if self._grpc_status != b"0":
            grpc_status = (self._grpc_status or b"missing").decode("latin-1")
            self._fail(f"grpc-status {grpc_status}")
            return
        try:
            status = serving_status(unframe(bytes(self._body)))
        except ValueError as exc:
            self._fail(f"bad HealthCheckResponse: {exc}")
            return
        if status != SERVING:
            name = (
                SERVING_STATUS_NAMES[status] if status < len(SERVING_STATUS_NAMES) else str(status)
            )
            self._fail(f"serving status {name}")
            return
        self.done = True
