"""An aioquic HTTP/3 client for bulk bodies: an upload generated as it goes, a download
hashed as it arrives, neither ever held whole.

Lighter than tests/http_cells/h3_transport.py (httpx over a thread and a queue per chunk),
so a GiB-sized transfer measures the gateway rather than the client: everything runs on the
asyncio loop, the upload is refilled when ACKs arrive (at most ``UNACKED_BYTES`` queued in
aioquic at a time) and the download is hashed in the event handler. aioquic grants receive
credit as bytes arrive, and the handler consumes them at once. Certificates are not verified
(the test certificate names localhost).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from dataclasses import dataclass, field
from typing import Any

from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset

UNACKED_BYTES = 1 << 20
CHUNK = bytes(64 * 1024)


@dataclass
class Result:
    status: int = 0
    body: bytearray = field(default_factory=bytearray)  # kept up to KEEP_BYTES (an answer)
    sha256: Any = field(default_factory=hashlib.sha256)
    size: int = 0


KEEP_BYTES = 64 * 1024


class _Client(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.result = Result()
        self.done: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.stream_id = -1
        self.upload_left = 0

    def start(self, method: str, authority: str, path: str, upload: int) -> None:
        self.stream_id = self._quic.get_next_available_stream_id()
        headers = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
        ]
        if upload:
            headers.append((b"content-length", b"%d" % upload))
        self.h3.send_headers(self.stream_id, headers, end_stream=not upload)
        self.upload_left = upload
        self._pump()

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        super().datagram_received(data, addr)
        if self.upload_left:  # ACKs may have emptied the send buffer
            self._pump()

    def _pump(self) -> None:
        stream = self._quic._streams.get(self.stream_id)
        while self.upload_left and stream is not None:
            if len(stream.sender._buffer) >= UNACKED_BYTES:
                break
            n = min(self.upload_left, len(CHUNK))
            self.upload_left -= n
            try:
                self.h3.send_data(self.stream_id, CHUNK[:n], end_stream=not self.upload_left)
            except Exception:  # stopped or reset by the server: the answer says why
                self.upload_left = 0
        self.transmit()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamReset) and event.stream_id == self.stream_id:
            self._finish(RuntimeError(f"stream reset {event.error_code:#x}"))
        elif isinstance(event, ConnectionTerminated):
            self._finish(RuntimeError(f"connection closed {event.error_code:#x}"))
        for ev in self.h3.handle_event(event):
            if getattr(ev, "stream_id", None) != self.stream_id:
                continue
            result = self.result
            if isinstance(ev, HeadersReceived) and not result.status:
                result.status = int(dict(ev.headers)[b":status"])
            elif isinstance(ev, DataReceived):
                result.sha256.update(ev.data)
                result.size += len(ev.data)
                if len(result.body) < KEEP_BYTES:
                    result.body += ev.data[: KEEP_BYTES - len(result.body)]
            if getattr(ev, "stream_ended", False):
                self._finish(None)

    def _finish(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if exc is None:
            self.done.set_result(self.result)
        else:
            self.done.set_exception(exc)


async def _request(host: str, port: int, method: str, path: str, upload: int) -> Result:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, idle_timeout=30.0)
    config.verify_mode = ssl.CERT_NONE
    config.server_name = "localhost"
    async with connect(host, port, configuration=config, create_protocol=_Client) as client:
        assert isinstance(client, _Client)
        client.start(method, f"{host}:{port}", path, upload)
        return await client.done


def upload(host: str, port: int, path: str, size: int) -> Result:
    """POST ``size`` zero bytes; the result holds the answer (its first KEEP_BYTES)."""
    return asyncio.run(_request(host, port, "POST", path, size))


def download(host: str, port: int, path: str) -> Result:
    """GET ``path``; the result holds the SHA-256 and length of the whole body."""
    return asyncio.run(_request(host, port, "GET", path, 0))
