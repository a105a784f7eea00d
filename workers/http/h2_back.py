"""The HTTP/2 back adapter: one exchange as one stream on a pooled upstream connection.

Owns the ``BackAdapter`` contract for ``protocol = "h2"``: take a slot from the pool, send the
neutral head as HEADERS (``gateway/http/h2_upstream.request_headers``), upload the body from
a task in the core's nursery (DATA within the backend's windows, then trailers or
END_STREAM), wait for the final response head (1xx skipped; the head timeout armed once the
upload finished), and hand back a response whose body is read from the stream's buffer
(``H2ResponseBody``: flow control is its backpressure). ``release(complete=False)`` and any
failure or cancellation reset that one stream with CANCEL, never the connection. Timeouts:
connect (and the wait for a stream slot) from the pool limits; the response head once the
upload finished; the body timeout between response chunks and for each upload chunk to get
a window and be written. Must never pick a backend or retry.

Wiring: ``H2Back(limits, h2_connect(plans))`` (``workers/http/h2_dial``: h2c, or TLS that
must select ALPN h2; ``None`` dials plain TCP for all). The connections' tasks live in
``serve``'s nursery when the owner runs ``await nursery.start(back.serve)``, else in a trio
system task started on first use; ``await back.aclose()`` ends them.
"""

from __future__ import annotations

import h2.exceptions
import trio

from gateway.http.errors import BadGateway, GatewayTimeout, HttpError
from gateway.http.h2_upstream import (
    PING_INTERVAL_S,
    PING_TIMEOUT_S,
    request_headers,
    response_body_length,
)
from gateway.http.limits import HttpLimits
from gateway.http.model import RequestHead
from workers.http.back import UpstreamRefused, UpstreamResponse
from workers.http.body import BodySource
from workers.http.h2_upstream_connection import H2UpstreamConnection
from workers.http.h2_upstream_pool import H2UpstreamPool
from workers.http.h2_upstream_stream import H2UpstreamStream
from workers.http1.backend import Backend, Connect, open_backend_stream


class H2ResponseBody(BodySource):
    """A response body read from one upstream stream's buffer; taking a chunk acknowledges it
    to the backend, which is what lets it send more."""

    def __init__(self, stream: H2UpstreamStream, length: int | None, idle_timeout_s: float):
        super().__init__(length)
        self._stream = stream
        self._idle_timeout_s = idle_timeout_s

    async def receive(self) -> bytes:
        self.started = True
        stream = self._stream
        while True:
            if stream.chunks:
                chunk = stream.take_chunk()
                self.received_bytes += len(chunk)
                return chunk
            if stream.remote_ended:
                # Complete, whatever befell the upload or the connection afterwards.
                self.trailers = stream.trailers
                return b""
            if stream.error is not None:
                raise stream.error
            with trio.move_on_after(self._idle_timeout_s):
                await stream.wait_data()
                continue
            raise GatewayTimeout("upstream body idle", kind="upstream_body_timeout")

    def discard(self) -> None:
        self._stream.conn.forget(self._stream)


class H2UpstreamResponse(UpstreamResponse):
    def __init__(
        self, stream: H2UpstreamStream, body: H2ResponseBody, declared_length: int | None
    ) -> None:
        assert stream.head is not None
        super().__init__(stream.head, body, declared_length)
        self._stream = stream

    async def release(self, *, complete: bool) -> None:
        # An unfinished stream (body abandoned, or the upload still running after a complete
        # response) is reset with CANCEL; unread bytes go back to the connection's window.
        self._stream.conn.forget(self._stream)


class H2Back:
    """The ``h2`` back adapter (``workers/http/back.BackAdapter``)."""

    protocol = "h2"

    def __init__(
        self,
        limits: HttpLimits,
        connect: Connect | None = None,
        *,
        ping_interval_s: float = PING_INTERVAL_S,
        ping_timeout_s: float = PING_TIMEOUT_S,
    ) -> None:
        self.limits = limits
        self.pool = H2UpstreamPool(
            limits.pool,
            connect or open_backend_stream,  # None: every backend is h2c (plain TCP)
            max_header_bytes=limits.max_header_bytes,
            max_headers=limits.max_headers,
            ping_interval_s=ping_interval_s,
            ping_timeout_s=ping_timeout_s,
        )
        self._head_timeout_s = limits.head_timeout_ms / 1000
        self._body_timeout_s = limits.body_timeout_ms / 1000

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.pool.serve(task_status=task_status)

    async def aclose(self) -> None:
        await self.pool.aclose()

    async def open_exchange(
        self, nursery: trio.Nursery, backend: Backend, head: RequestHead, body: BodySource
    ) -> UpstreamResponse:
        conn = await self.pool.acquire(backend)
        end_stream = body.length == 0
        stream = self._open_stream(conn, head, body, end_stream=end_stream)
        head_scope = trio.CancelScope()
        try:
            if end_stream:
                head_scope.deadline = trio.current_time() + self._head_timeout_s
            else:
                nursery.start_soon(self._upload, conn, stream, body, head_scope)
            with head_scope:
                response_head = await stream.wait_head()
            if head_scope.cancelled_caught:
                raise GatewayTimeout("upstream response head timed out", kind="head_timeout")
        except BaseException:
            conn.forget(stream)
            raise
        declared, length = response_body_length(
            response_head.status, head.method, response_head.headers
        )
        if length is None and stream.remote_ended and not stream.chunks:
            # The head came with END_STREAM (a gRPC trailers-only answer among them): no body,
            # and the front must end its stream with the head too.
            length = 0
        response_body = H2ResponseBody(stream, length, self._body_timeout_s)
        return H2UpstreamResponse(stream, response_body, declared)

    def _open_stream(
        self, conn: H2UpstreamConnection, head: RequestHead, body: BodySource, *, end_stream: bool
    ) -> H2UpstreamStream:
        headers = request_headers(head, conn.scheme, body.length)
        try:
            return conn.open_stream(headers, end_stream=end_stream)
        except h2.exceptions.TooManyStreamsError:
            raise UpstreamRefused("backend lowered its stream limit") from None
        except h2.exceptions.ProtocolError as exc:
            # h2's outbound header validation: nothing was sent.
            raise BadGateway(f"request not expressible in HTTP/2: {exc}", kind="upstream_request")

    async def _upload(
        self,
        conn: H2UpstreamConnection,
        stream: H2UpstreamStream,
        body: BodySource,
        head_scope: trio.CancelScope,
    ) -> None:
        """Runs in the core's nursery: must never raise (a failed body fails the stream)."""
        try:
            while True:
                chunk = await body.receive()
                if not chunk:
                    break
                with trio.move_on_after(self._body_timeout_s):
                    if not await conn.send_data(stream, chunk):
                        return  # the stream ended (answered, reset, connection lost)
                    continue
                # No window from the backend (or a socket it does not read) for a whole body
                # timeout: give up on this stream only.
                conn.reset_stream(stream)
                stream.fail(BadGateway("upstream write stalled", kind="upstream_write"))
                return
            await conn.end_stream(stream, body.trailers)
        except HttpError as exc:
            # The client's body failed (reset, timeout, over a cap): the backend must not see
            # a truncated body as complete, and the exchange ends with the client's error.
            conn.reset_stream(stream)
            stream.fail(exc)
            return
        except h2.exceptions.ProtocolError as exc:
            if not stream.finished:
                # h2's outbound validation refused the trailers (say, a field HTTP/2 forbids):
                # the stream must not hang half-sent.
                conn.reset_stream(stream)
                stream.fail(
                    BadGateway(f"request not expressible in HTTP/2: {exc}", kind="upstream_request")
                )
            return
        head_scope.deadline = trio.current_time() + self._head_timeout_s
