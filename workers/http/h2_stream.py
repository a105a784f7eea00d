"""One HTTP/2 request stream on the front: its body source and its response sink.

Owns: the request body as a BodySource whose backpressure is HTTP/2 flow control (received
DATA is acknowledged — the client's window reopened — only when the core takes it, so a
stream buffers at most its window), the lazy ``100 Continue``, the body cap and idle
timeout; the response sink that frames the neutral head as HEADERS (``content-length``
when known), sends DATA within the client's windows (waiting for WINDOW_UPDATE no longer
than the body timeout: a zero-window stall ends the stream), trailers, small error
responses, and the reset that ends a stream whose response cannot complete. Must never
touch the socket (the connection's writer does) or another stream.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

import h2.errors
import h2.exceptions
import trio

from gateway.http.errors import BodyTooLarge, HttpError, RequestTimeout
from gateway.http.model import HeaderList, ResponseHead
from gateway.http.responses import error_body
from workers.http.body import BodySource
from workers.http1.exchange_steps import ClientGone

if TYPE_CHECKING:
    from workers.http.h2_front import H2ServerConnection


# Queued DATA frames handed to the core as one chunk, at most this many bytes.
COALESCE_BYTES = 64 * 1024


class StreamStalled(ClientGone):
    kind = "client_stalled"


class H2RequestBody(BodySource):
    """DATA of one request stream, queued by the connection's reader, taken by the core."""

    def __init__(
        self,
        conn: H2ServerConnection,
        stream_id: int,
        length: int | None,
        *,
        max_body_bytes: int,
        idle_s: float,
        expect_continue: bool,
    ) -> None:
        super().__init__(length)
        self.conn = conn
        self.stream_id = stream_id
        self.max_body_bytes = max_body_bytes
        self.idle_s = idle_s
        self.expect_continue = expect_continue
        self.queued: collections.deque[tuple[bytes, int]] = collections.deque()
        self.ended = False
        self.error: HttpError | None = None
        self.discarded = False
        self.streaming = length != 0  # DATA may still be on its way
        self._wake = trio.Event()

    # -- the connection's reader side (never awaits) --

    def push(self, data: bytes, flow_len: int) -> None:
        if self.discarded or self.error is not None:
            self.conn.acknowledge(self.stream_id, flow_len)
            return
        self.queued.append((data, flow_len))
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
        if self.expect_continue:
            self.expect_continue = False
            self.conn.send_interim(self.stream_id, 100)
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
        # Everything queued leaves as one chunk (up to COALESCE_BYTES): one upstream write
        # and one window update for a run of DATA frames.
        data, flow_len = self.queued.popleft()
        if self.queued and len(data) < COALESCE_BYTES:
            parts = [data]
            size = len(data)
            while self.queued and size < COALESCE_BYTES:
                more, more_flow = self.queued.popleft()
                parts.append(more)
                size += len(more)
                flow_len += more_flow
            data = b"".join(parts)
        self.received_bytes += len(data)
        if self.received_bytes > self.max_body_bytes:
            self.discard()
            raise BodyTooLarge("request body over the cap")
        self.conn.acknowledge(self.stream_id, flow_len)
        return data

    def discard(self) -> None:
        self.discarded = True
        while self.queued:
            self.conn.acknowledge(self.stream_id, self.queued.popleft()[1])


class H2ResponseSink:
    """The response of one stream, framed for the client within its flow-control windows."""

    def __init__(self, conn: H2ServerConnection, stream_id: int, stall_s: float) -> None:
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
            self.conn.h2.send_headers(self.stream_id, fields, end_stream=end)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            raise self._closed() from None
        self.finished = end
        await self.conn.room_to_send(0)

    async def send_data(self, data: bytes) -> None:
        conn = self.conn
        view = memoryview(data)
        while view:
            try:
                window = conn.h2.local_flow_control_window(self.stream_id)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                raise self._closed() from None
            if window <= 0:
                if not await conn.wait_for_window(self.stream_id, self.stall_s):
                    raise StreamStalled("client window stayed closed")
                continue
            n = min(window, conn.h2.max_outbound_frame_size, len(view))
            try:
                conn.h2.send_data(self.stream_id, bytes(view[:n]))
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                raise self._closed() from None
            view = view[n:]
            self.bytes_out += n
            await conn.room_to_send(n)

    async def send_end(self, trailers: HeaderList) -> None:
        try:
            if trailers:
                self.conn.h2.send_headers(self.stream_id, trailers, end_stream=True)
            else:
                self.conn.h2.end_stream(self.stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            raise self._closed() from None
        self.finished = True
        await self.conn.room_to_send(0)

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
        """End a stream whose response cannot complete: RST_STREAM (CANCEL when the client
        left or stalled, INTERNAL_ERROR when the upstream failed mid-response)."""
        if self.finished:
            return
        self.finished = True
        code = (
            h2.errors.ErrorCodes.CANCEL
            if isinstance(exc, ClientGone)
            else h2.errors.ErrorCodes.INTERNAL_ERROR
        )
        self.conn.reset(self.stream_id, code)
