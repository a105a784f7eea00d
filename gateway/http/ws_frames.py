"""WebSocket frame-boundary tracking for an opaque relay, and the close frames we inject.

Owns: knowing whether a relayed byte stream sits between frames (so a close frame can be
injected without corrupting it), the message-size cap (RFC 6455 §5.2) and the budget of
pings a client may send (each one its backend must answer, RFC 6455 §5.5.2). Must never
unmask, buffer or rewrite payloads.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
_OPCODE_PING = 0x9


class FrameTooLarge(Exception):
    """A frame (or fragmented message) exceeded the size cap."""


@dataclass(slots=True)
class FrameTracker:
    max_message_bytes: int
    _header: bytearray | None = None
    _payload_left: int = 0
    _message_bytes: int = 0
    pings: int = 0  # ping frames begun so far

    @property
    def at_boundary(self) -> bool:
        return self._payload_left == 0 and not self._header

    def feed(self, data: bytes | bytearray) -> None:
        """Advance over ``data``; raises FrameTooLarge when a message passes the cap."""
        view = memoryview(data)
        while view:
            if self._payload_left:
                step = min(self._payload_left, len(view))
                self._payload_left -= step
                view = view[step:]
                continue
            if self._header is None:
                self._header = bytearray()
            need = _header_length(self._header)
            take = min(need - len(self._header), len(view))
            self._header += view[:take]
            view = view[take:]
            if len(self._header) == _header_length(self._header):
                self._start_frame(bytes(self._header))
                self._header = None

    def _start_frame(self, header: bytes) -> None:
        fin = bool(header[0] & 0x80)
        opcode = header[0] & 0x0F
        length = header[1] & 0x7F
        if opcode == _OPCODE_PING:
            self.pings += 1
        if length == 126:
            length = int.from_bytes(header[2:4], "big")
        elif length == 127:
            length = int.from_bytes(header[2:10], "big")
        if opcode < 0x8:  # data frames accumulate into a message; control frames do not
            self._message_bytes += length
            if self._message_bytes > self.max_message_bytes:
                raise FrameTooLarge(f"message of {self._message_bytes} bytes")
            if fin:
                self._message_bytes = 0
        self._payload_left = length


@dataclass(slots=True)
class PingBudget:
    """At most ``max_pings`` pings within each ``window_s`` (a fixed window that starts with
    the first ping after the last one lapsed: the original's 50 per 10 s)."""

    max_pings: int
    window_s: float
    _window_started_at: float = float("-inf")
    _spent: int = 0

    def admit(self, pings: int, now: float) -> bool:
        """Count ``pings`` sent at ``now``; False once the window's budget is overspent."""
        if now - self._window_started_at >= self.window_s:
            self._window_started_at = now
            self._spent = 0
        self._spent += pings
        return self._spent <= self.max_pings


def _header_length(partial: bytearray) -> int:
    if len(partial) < 2:
        return 2
    length = partial[1] & 0x7F
    extra = 2 if length == 126 else 8 if length == 127 else 0
    return 2 + extra + (4 if partial[1] & 0x80 else 0)


def close_frame(code: int, *, masked: bool, rng: random.Random | None = None) -> bytes:
    """A close frame; frames toward a server must be masked (RFC 6455 §5.3)."""
    payload = code.to_bytes(2, "big")
    if not masked:
        return bytes((0x88, len(payload))) + payload
    if rng is None:
        raise ValueError("a masked frame needs an rng for its key")
    key = rng.getrandbits(32).to_bytes(4, "big")
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes((0x88, 0x80 | len(payload))) + key + body
