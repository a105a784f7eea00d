"""One HTTP/3 request stream on the front: its body source and its response sink.

Owns: the request body as a BodySource whose backpressure is QUIC flow control (DATA the
H3 layer delivered is *held* — credit is not reopened — until the core takes it, see
workers/quic_connection.py, so a stream buffers at most its window), the body cap and idle
timeout; the response sink that frames the neutral head as an H3 HEADERS frame
(``content-length`` when known), sends DATA no faster than the client acknowledges (at most
``SEND_BUFFER_BYTES`` unacknowledged per stream; a client that acknowledges nothing for the
body timeout ends the stream), trailers, small error responses, and the reset that ends a
stream whose response cannot complete (H3_REQUEST_CANCELLED when the client left,
H3_INTERNAL_ERROR when the upstream failed). Must never touch the socket or another stream.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

import trio
from aioquic.h3.connection import ErrorCode, ProtocolError
from aioquic.h3.exceptions import H3Error

from gateway.http.errors import BodyTooLarge, HttpError, RequestTimeout
from gateway.http.model import HeaderList, ResponseHead
from gateway.http.responses import error_body
from workers.http.body import BodySource
from workers.http1.exchange_steps import ClientGone

if TYPE_CHECKING:
    from workers.http.h3_front import H3ServerConnection

# Unacknowledged response bytes one stream may have queued in aioquic before its sender waits.
SEND_BUFFER_BYTES = 256 * 1024
# The largest DATA frame payload queued at once.
SEND_CHUNK_BYTES = 64 * 1024
COALESCE_BYTES = 64 * 1024
# What aioquic raises when a stream can no longer send (reset, STOP_SENDING, FIN sent).
SEND_ERRORS = (RuntimeError, ValueError, AssertionError, H3Error, ProtocolError)


class StreamStalled(ClientGone):
    kind = "client_stalled"


class H3RequestBody(BodySource):
    """DATA of one request stream, queued by the connection's event loop, taken by the core."""

    def __init__(
        self,
        conn: H3ServerConnection,
        stream_id: int,
        length: int | None,
        *,
        max_body_bytes: int,
        idle_s: float,
    ) -> None:
        super().__init__(length)
        self.conn = conn
        self.stream_id = stream_id
        self.max_body_bytes = max_body_bytes
        self.idle_s = idle_s
        self.queued: collections.deque[bytes] = collections.deque()
        self.ended = False
        self.error: HttpError | None = None
        self.discarded = False
        self.streaming = length != 0
        self._wake = trio.Event()

    # -- the connection's side (never awaits) --

    def push(self, data: bytes) -> None:
        if self.discarded or self.error is not None:
            return  # not held: the credit of a discarded body is not withheld
        self.conn.quic.hold(self.stream_id, len(data))
        self.queued.append(data)
        self._wake.set()

    def end(self, trailers: HeaderList | None = None) -> None:
        if trailers:
            self.trailers = trailers
        self.ended = True
        self._wake.set()

    def fail(self, exc: HttpError) -> None:
        if self.error is None:
            self.error = exc
        self._wake.set()

    # -- the core's side --

    async def receive(self) -> bytes:
        self.started = True
        while not self.queued:
            if self.error is not None:
                raise self.error
            if self.ended:
                return b""
            self._wake = trio.Event()
            with trio.move_on_after(self.idle_s) as scope:
                await self._wake.wait()
            if scope.cancelled_caught:
                raise RequestTimeout("request body too slow", kind="body_timeout")
        data = self.queued.popleft()
        if self.queued and len(data) < COALESCE_BYTES:
            parts = [data]
            size = len(data)
            while self.queued and size < COALESCE_BYTES:
                more = self.queued.popleft()
                parts.append(more)
                size += len(more)
            data = b"".join(parts)
        self.received_bytes += len(data)
        self.conn.consumed(self.stream_id, len(data))
        if self.received_bytes > self.max_body_bytes:
            self.discard()
            raise BodyTooLarge("request body over the cap")
        return data

    def discard(self) -> None:
        """Nothing more is read: release what is held and ask the client to stop sending."""
        if self.discarded:
            return
        self.discarded = True
        held = sum(len(d) for d in self.queued)
        self.queued.clear()
        self.conn.consumed(self.stream_id, held)
        if not self.ended:
            self.conn.stop_reading(self.stream_id, ErrorCode.H3_NO_ERROR)


class H3ResponseSink:
    """The response of one stream, framed by aioquic's H3 layer, paced by the client's ACKs."""

    def __init__(self, conn: H3ServerConnection, stream_id: int, stall_s: float) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.stall_s = stall_s
        self.started = False
        self.bytes_out = 0
        self.finished = False

    def _closed(self) -> ClientGone:
        return ClientGone("client reset the stream", kind="client_reset")

    async def send_head(self, head: ResponseHead, *, length: int | None, end: bool) -> None:
        fields: HeaderList = [(b":status", b"%d" % head.status), *head.headers]
        if length is not None:
            fields.append((b"content-length", b"%d" % length))
        self.started = True
        try:
            self.conn.h3.send_headers(self.stream_id, fields, end_stream=end)
        except SEND_ERRORS:
            raise self._closed() from None
        self.finished = end
        self.conn.session.kick()

    async def send_data(self, data: bytes) -> None:
        conn = self.conn
        view = memoryview(data)
        while view:
            if conn.unacked(self.stream_id) >= SEND_BUFFER_BYTES:
                if not await conn.session.wait_progress(self.stall_s):
                    raise StreamStalled("client acknowledged nothing")
                continue
            n = min(SEND_CHUNK_BYTES, len(view))
            try:
                conn.h3.send_data(self.stream_id, bytes(view[:n]), end_stream=False)
            except SEND_ERRORS:
                raise self._closed() from None
            view = view[n:]
            self.bytes_out += n
            conn.session.kick()
            await trio.lowlevel.checkpoint()

    async def send_end(self, trailers: HeaderList) -> None:
        try:
            if trailers:
                self.conn.h3.send_headers(self.stream_id, trailers, end_stream=True)
            else:
                self.conn.h3.send_data(self.stream_id, b"", end_stream=True)
        except SEND_ERRORS:
            raise self._closed() from None
        self.finished = True
        self.conn.session.kick()

    async def send_error(self, exc: HttpError) -> None:
        body = error_body(exc.status)
        head = ResponseHead(exc.status, headers=[(b"content-type", b"text/plain; charset=utf-8")])
        try:
            await self.send_head(head, length=len(body), end=False)
            await self.send_data(body)
            await self.send_end([])
        except ClientGone:
            pass  # nobody left to tell

    async def abort(self, exc: HttpError) -> None:
        """End a stream whose response cannot complete: reset it (RFC 9114 §4.1.1)."""
        if self.finished:
            return
        self.finished = True
        code = (
            ErrorCode.H3_REQUEST_CANCELLED
            if isinstance(exc, ClientGone)
            else ErrorCode.H3_INTERNAL_ERROR
        )
        self.conn.reset(self.stream_id, code)
