"""HTTP/3 towards a backend: the decisions the upstream QUIC client makes without I/O.

Owns the receive credit we extend to a backend (a stream's and the connection's MAX_DATA
move only as the consumer takes bytes, so a connection buffers at most
CONNECTION_WINDOW_BYTES whatever the backend sends), how much of an upload may sit unacked
in QUIC's send buffer, how many streams a connection may carry given the peer's cumulative
MAX_STREAMS, what a backend's stream reset or H3 GOAWAY means for one stream (refused and
retry-safe, reset, or harmless), and a reader of the peer's control stream that spots its
GOAWAY (aioquic parses the frame but drops its payload). The request header list and body
length rules are HTTP/2's (``h2_upstream``): RFC 9114 §4.2 forbids the same connection-
specific fields. Must never touch I/O, aioquic objects or trio.
"""

from __future__ import annotations

from typing import Final

# Our receive credit per request stream and per connection (RFC 9000 §4.1).
STREAM_WINDOW_BYTES: Final = 1 << 20
CONNECTION_WINDOW_BYTES: Final = 16 << 20
# An upload waits while more than this of its stream is unacknowledged in QUIC's send buffer
# (aioquic buffers whatever it is given; this is what bounds an upload's memory).
SEND_BUFFER_BYTES: Final = 256 * 1024
# Never more concurrent streams on one connection than this, even if the backend allows more.
MAX_STREAMS_PER_CONNECTION: Final = 100
# The QUIC idle timeout we offer (RFC 9000 §10.1); the pool closes idle connections sooner.
QUIC_IDLE_TIMEOUT_S: Final = 60.0

# RFC 9114 §8.1 error codes we act on.
H3_NO_ERROR: Final = 0x100
H3_INTERNAL_ERROR: Final = 0x102
H3_REQUEST_REJECTED: Final = 0x10B
H3_REQUEST_CANCELLED: Final = 0x10C

# What a reset or GOAWAY means for one stream (the values of ``h2_upstream``).
STREAM_REFUSED: Final = "refused"  # nothing processed: the core may retry elsewhere
STREAM_RESET: Final = "reset"  # the stream failed; it may have been processed
STREAM_UNHARMED: Final = "unharmed"  # the response was complete: only the upload stops

# RFC 9114 §6.2.1 and §7.2: the control stream's type and the GOAWAY frame's.
_CONTROL_STREAM_TYPE: Final = 0x00
_GOAWAY_FRAME: Final = 0x07
# A control frame we read whole (GOAWAY: one varint); any other frame's payload is skipped.
_MAX_GOAWAY_PAYLOAD: Final = 8


def raised_credit(consumed: int, window: int, current: int) -> int:
    """The receive limit to announce once ``consumed`` bytes were taken: ``window`` past what
    the consumer took, raised in steps of at least half a window (fewer MAX_*DATA frames);
    never lowered (RFC 9000 §4.1)."""
    target = consumed + window
    if target - current >= window // 2:
        return target
    return current


def stream_room(next_stream_index: int, peer_max_streams: int, active: int, reserved: int) -> int:
    """How many more request streams a connection may open now: the peer's cumulative
    MAX_STREAMS (RFC 9000 §4.6) less the streams opened or promised, and our own cap."""
    by_peer = peer_max_streams - next_stream_index - reserved
    by_us = MAX_STREAMS_PER_CONNECTION - active - reserved
    return max(0, min(by_peer, by_us))


def goaway_fate(stream_id: int, goaway_id: int) -> str:
    """An H3 GOAWAY names the first request stream the server did not and will not process
    (RFC 9114 §5.2): that one and those above it may be sent again elsewhere."""
    return STREAM_REFUSED if stream_id >= goaway_id else STREAM_UNHARMED


def reset_fate(error_code: int, *, response_complete: bool) -> str:
    """What a backend's RESET_STREAM means: H3_REQUEST_REJECTED says nothing was processed
    (RFC 9114 §4.1.1); after a complete response only our upload stops."""
    if response_complete:
        return STREAM_UNHARMED
    if error_code == H3_REQUEST_REJECTED:
        return STREAM_REFUSED
    return STREAM_RESET


def _varint(data: bytes | bytearray, pos: int) -> tuple[int, int]:
    """(value, next position) of a QUIC variable-length integer at ``pos``; (-1, pos) when
    the buffer ends first (RFC 9000 §16)."""
    if pos >= len(data):
        return -1, pos
    first = data[pos]
    size = 1 << (first >> 6)
    if pos + size > len(data):
        return -1, pos
    value = first & 0x3F
    for k in range(1, size):
        value = (value << 8) | data[pos + k]
    return value, pos + size


class ControlStreamReader:
    """Reads one peer-initiated unidirectional stream: when it is the control stream, spots
    GOAWAY frames (``goaway_id`` then holds the lowest id received); any other stream type
    is ignored from its first byte on. Holds at most one frame header and a GOAWAY payload."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._stream_type = -1
        self._skip = 0  # payload bytes of the current (uninteresting) frame still to skip
        self.ignored = False
        self.goaway_id = -1

    def feed(self, data: bytes) -> bool:
        """Take the stream's next bytes; True when a (lower) GOAWAY arrived in them."""
        if self.ignored:
            return False
        self._buffer += data
        buf = self._buffer
        pos = 0
        found = False
        if self._stream_type < 0:
            stream_type, pos = _varint(buf, pos)
            if stream_type < 0:
                return False
            self._stream_type = stream_type
            if stream_type != _CONTROL_STREAM_TYPE:
                self.ignored = True
                self._buffer = bytearray()
                return False
        while True:
            if self._skip:
                taken = min(self._skip, len(buf) - pos)
                self._skip -= taken
                pos += taken
                if self._skip:
                    break
            frame_type, after_type = _varint(buf, pos)
            if frame_type < 0:
                break
            length, after_length = _varint(buf, after_type)
            if length < 0:
                break
            if frame_type != _GOAWAY_FRAME or length > _MAX_GOAWAY_PAYLOAD:
                pos = after_length
                self._skip = length
                continue
            if after_length + length > len(buf):
                break
            goaway_id, _ = _varint(buf, after_length)
            pos = after_length + length
            if goaway_id >= 0 and (self.goaway_id < 0 or goaway_id < self.goaway_id):
                self.goaway_id = goaway_id
                found = True
        del buf[:pos]
        return found
