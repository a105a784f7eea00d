"""Messages between the supervisor and its workers, and their framing.

Frames are a 4-byte big-endian length followed by a msgpack-encoded tagged Struct.
Commands (supervisor -> worker) are imperative (`Boot`, `Drain`); events
(worker -> supervisor) are in the past tense (`BecameReady`, `Drained`). Pure:
bytes in, messages out; the trio adapters on both sides do the I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import msgspec

from gateway.config.plan import GatewayPlan
from gateway.errors import GatewayError

MAX_FRAME_BYTES = 64 * 1024 * 1024
_LEN = struct.Struct(">I")


class ProtocolError(GatewayError, ValueError):
    """The peer sent a frame that is not a valid message."""


# supervisor -> worker -------------------------------------------------------------


class Boot(msgspec.Struct, tag=True, frozen=True):
    worker_id: int
    generation: int
    cpu: int
    plan: GatewayPlan
    listener_fds: dict[str, int]  # listener name -> inherited fd of this CPU's socket
    # the sockarray key of this CPU's sockets (gateway.steering.shared_socket_key): what the
    # worker's QUIC connection IDs name, so the sk_reuseport program steers them here
    worker_key: int = 0
    # quic_passthrough listener name -> inherited fds of its shared tables (routes, flows)
    quic_table_fds: dict[str, list[int]] = {}


class Drain(msgspec.Struct, tag=True, frozen=True):
    timeout_s: float  # in-flight work may run this long, then it is closed


class Stop(msgspec.Struct, tag=True, frozen=True):
    pass


class SetBackendHealth(msgspec.Struct, tag=True, frozen=True):
    listener: str
    backend_id: str
    healthy: bool


# worker -> supervisor -------------------------------------------------------------


class BecameReady(msgspec.Struct, tag=True, frozen=True):
    pid: int


class BackendFigures(msgspec.Struct, frozen=True):
    listener: str
    backend_id: str
    active_connections: int
    failures: int  # consecutive failures seen by this worker
    ejected_until_s: float  # 0.0 when not ejected; seconds from now otherwise


class Heartbeat(msgspec.Struct, tag=True, frozen=True):
    active_connections: int
    handled_connections: int
    handled_requests: int
    backends: list[BackendFigures] = []
    metrics: bytes = b""  # a msgpack-encoded metrics snapshot, opaque to the channel


class Drained(msgspec.Struct, tag=True, frozen=True):
    closed_connections: int  # connections still open at the deadline, closed by force


class BootFailed(msgspec.Struct, tag=True, frozen=True):
    reason: str


ToWorker = Boot | Drain | Stop | SetBackendHealth
ToSupervisor = BecameReady | Heartbeat | Drained | BootFailed

_encoder = msgspec.msgpack.Encoder()
_to_worker = msgspec.msgpack.Decoder(ToWorker)
_to_supervisor = msgspec.msgpack.Decoder(ToSupervisor)


def encode(message: ToWorker | ToSupervisor) -> bytes:
    body = _encoder.encode(message)
    return _LEN.pack(len(body)) + body


class FrameDecoder:
    """Incremental decoder: feed bytes, iterate complete messages."""

    def __init__(self, direction: str) -> None:
        if direction == "to_worker":
            self._decoder: (
                msgspec.msgpack.Decoder[ToWorker] | msgspec.msgpack.Decoder[ToSupervisor]
            ) = _to_worker
        elif direction == "to_supervisor":
            self._decoder = _to_supervisor
        else:
            raise ValueError(f"direction must be to_worker or to_supervisor, got {direction!r}")
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[ToWorker | ToSupervisor]:
        self._buffer += data
        while len(self._buffer) >= _LEN.size:
            (length,) = _LEN.unpack_from(self._buffer)
            if length > MAX_FRAME_BYTES:
                raise ProtocolError(f"frame of {length} bytes exceeds {MAX_FRAME_BYTES}")
            end = _LEN.size + length
            if len(self._buffer) < end:
                return
            body = bytes(self._buffer[_LEN.size : end])
            del self._buffer[:end]
            try:
                yield self._decoder.decode(body)
            except msgspec.DecodeError as exc:
                raise ProtocolError(f"undecodable message: {exc}") from None
