"""The HTTP/2 health probe's protocol side: one GET on a fresh connection, bytes in and out.

Owns the probe's HTTP/2 exchange (preface and SETTINGS, one HEADERS with END_STREAM on
stream 1, the final status read from the backend's frames) and the
verdict on a status (``status_problem``: the ``expected_status`` ranges, as for the HTTP/1.1
probe). Must never touch sockets, TLS or clocks: the supervisor's prober does the I/O
(h2c with prior knowledge, or TLS with ALPN h2, by the backend's plan).
"""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

_STREAM_ID = 1
# A probe reads one response head; a bigger head is a broken backend, not a reason to buffer.
_PROBE_MAX_HEADER_BYTES = 16 * 1024


def status_problem(status: int, ranges: list[tuple[int, int]], expected: str) -> str:
    """'' when ``status`` falls in one of ``ranges``, else the reason for the log."""
    for low, high in ranges:
        if low <= status <= high:
            return ""
    return f"status {status} not in {expected}"


class H2Probe:
    """One probe's HTTP/2 client state: ``start`` → send; ``receive`` until ``status`` or
    ``problem`` is set (both stay empty while more bytes are needed)."""

    def __init__(self, *, scheme: bytes, authority: bytes, path: bytes) -> None:
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self._conn: Any = h2.connection.H2Connection(config)
        # Through initial_values: h2's setters would only queue a change for a later SETTINGS.
        self._conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: _PROBE_MAX_HEADER_BYTES,
            },
        )
        self._conn.decoder.max_header_list_size = _PROBE_MAX_HEADER_BYTES
        self._request = [
            (b":method", b"GET"),
            (b":scheme", scheme),
            (b":authority", authority),
            (b":path", path or b"/"),
            (b"user-agent", b"expressgateway-health"),
        ]
        self.status = 0
        self.problem = ""

    @property
    def done(self) -> bool:
        return self.status != 0 or self.problem != ""

    def start(self) -> bytes:
        self._conn.initiate_connection()
        self._conn.send_headers(_STREAM_ID, self._request, end_stream=True)
        return bytes(self._conn.data_to_send())

    def receive(self, data: bytes) -> bytes:
        """Feed the backend's bytes (b"" at EOF); returns what to send back."""
        if not data:
            if not self.done:
                self.problem = "closed before a response"
            return b""
        try:
            events = self._conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.problem = f"bad response: {exc}"
            return bytes(self._conn.data_to_send())
        for event in events:
            self._on_event(event)
        return bytes(self._conn.data_to_send())

    def _on_event(self, event: Any) -> None:
        if self.done:
            return
        if isinstance(event, h2.events.ResponseReceived) and event.stream_id == _STREAM_ID:
            for name, value in event.headers:
                if name == b":status":
                    raw = bytes(value)
                    if len(raw) == 3 and raw.isdigit():
                        self.status = int(raw)
                    else:
                        self.problem = f"bad :status {raw!r}"
                    return
            self.problem = "response without :status"
        elif isinstance(event, h2.events.StreamReset) and event.stream_id == _STREAM_ID:
            self.problem = f"stream reset by the backend (code {int(event.error_code or 0)})"
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.problem = f"GOAWAY before a response (code {int(event.error_code or 0)})"
