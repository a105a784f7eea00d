"""The HTTP/3 health probe's protocol side: one GET on a fresh QUIC connection, datagrams in
and out.

Owns the probe's QUIC + HTTP/3 exchange (aioquic's sans-IO client: the handshake with the
certificate checks its configuration asks for, one HEADERS with FIN on stream 0, the final
status read from the response head) and what ends it: a status, a reset stream, or a closed
connection (a failed handshake: the TLS alert's reason). The verdict on a status is
``h2_probe.status_problem``, as for the other probes. Must never touch sockets or clocks:
the supervisor's prober does the I/O and passes ``now``.
"""

from __future__ import annotations

from typing import Any

from aioquic.h3.connection import H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, StreamReset

_STREAM_ID = 0
_H3_NO_ERROR = 0x100


class H3Probe:
    """One probe's QUIC client state: ``start`` → ``datagrams`` to send; ``receive`` and
    ``handle_timer`` until ``status`` or ``problem`` is set."""

    def __init__(self, configuration: Any, *, authority: bytes, path: bytes) -> None:
        self._quic: Any = QuicConnection(configuration=configuration)
        self._h3: Any = H3Connection(self._quic)
        self._request = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", authority),
            (b":path", path or b"/"),
            (b"user-agent", b"expressgateway-health"),
        ]
        self.status = 0
        self.problem = ""

    @property
    def done(self) -> bool:
        return self.status != 0 or self.problem != ""

    def start(self, peer: Any, now: float) -> None:
        self._quic.connect(peer, now=now)
        self._h3.send_headers(_STREAM_ID, self._request, end_stream=True)

    def datagrams(self, now: float) -> list[bytes]:
        return [data for data, _addr in self._quic.datagrams_to_send(now=now)]

    def timer(self) -> float | None:
        at: float | None = self._quic.get_timer()
        return at

    def handle_timer(self, now: float) -> None:
        self._quic.handle_timer(now=now)
        self._events()

    def receive(self, data: bytes, peer: Any, now: float) -> None:
        self._quic.receive_datagram(data, peer, now=now)
        self._events()

    def close(self) -> None:
        """CONNECTION_CLOSE (H3_NO_ERROR), sent with the next ``datagrams``."""
        self._quic.close(error_code=_H3_NO_ERROR)

    def _events(self) -> None:
        while True:
            event = self._quic.next_event()
            if event is None:
                break
            if isinstance(event, ConnectionTerminated):
                if not self.done:
                    phrase = f": {event.reason_phrase}" if event.reason_phrase else ""
                    self.problem = f"connection closed (code {event.error_code:#x}{phrase})"
                continue
            if isinstance(event, StreamReset) and event.stream_id == _STREAM_ID:
                if not self.done:
                    self.problem = f"stream reset by the backend (code {event.error_code:#x})"
                continue
            for h3_event in self._h3.handle_event(event):
                if isinstance(h3_event, HeadersReceived) and h3_event.stream_id == _STREAM_ID:
                    self._on_head(h3_event.headers)
        closed = self._quic._close_event  # a failed handshake closes before any event
        if closed is not None and not self.done:
            phrase = f": {closed.reason_phrase}" if closed.reason_phrase else ""
            self.problem = f"connection closed (code {closed.error_code:#x}{phrase})"

    def _on_head(self, headers: list[tuple[bytes, bytes]]) -> None:
        if self.done:
            return
        for name, value in headers:
            if name == b":status":
                raw = bytes(value)
                if len(raw) == 3 and raw.isdigit():
                    status = int(raw)
                    if status >= 200:  # 1xx: the final head follows
                        self.status = status
                else:
                    self.problem = f"bad :status {raw!r}"
                return
        self.problem = "response without :status"
