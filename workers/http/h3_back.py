"""The HTTP/3 back adapter: one exchange as one request stream on a pooled QUIC connection.

Owns the ``BackAdapter`` contract for ``protocol = "h3"``: take a slot from the pool
(``H3UpstreamPool``: QUIC connections per backend, certificate verified at the handshake),
send the neutral head as HEADERS (the HTTP/2 header-list rules, ``gateway/http/h2_upstream``:
RFC 9114 §4.2 forbids the same fields), upload the body from a task in the core's nursery
(DATA while the stream's unacked backlog is small, then trailers or FIN), wait for the final
response head (1xx skipped; the head timeout armed once the upload finished), and hand back
a response whose body is read from the stream's buffer (the HTTP/2 adapter's
``H2ResponseBody``: taking a chunk is what lets QUIC extend the backend's credit).
``release(complete=False)`` and any failure or cancellation reset that one stream
(RESET_STREAM + STOP_SENDING, H3_REQUEST_CANCELLED), never the connection. Timeouts as for
``h2``. Must never pick a backend or retry.

Wiring: ``H3Back(limits, h3_dialer(plans))``; the connections' tasks live in ``serve``'s
nursery when the owner hosts it, else in a trio system task started on first use.
"""

from __future__ import annotations

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
from workers.http.back import UpstreamResponse
from workers.http.body import BodySource
from workers.http.h2_back import H2ResponseBody, H2UpstreamResponse
from workers.http.h2_upstream_stream import H2UpstreamStream
from workers.http.h3_dial import H3Dialer
from workers.http.h3_upstream_connection import H3UpstreamConnection
from workers.http.h3_upstream_pool import H3UpstreamPool
from workers.http1.backend import Backend


class H3Back:
    """The ``h3`` back adapter (``workers/http/back.BackAdapter``)."""

    protocol = "h3"

    def __init__(
        self,
        limits: HttpLimits,
        dialer: H3Dialer | None = None,
        *,
        ping_interval_s: float = PING_INTERVAL_S,
        ping_timeout_s: float = PING_TIMEOUT_S,
    ) -> None:
        self.limits = limits
        self.pool = H3UpstreamPool(
            limits.pool,
            dialer or H3Dialer(()),
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
        assert isinstance(conn, H3UpstreamConnection)
        end_stream = body.length == 0
        headers = request_headers(head, conn.scheme, body.length)
        stream = conn.open_stream(headers, end_stream=end_stream)
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
        response_body = H2ResponseBody(stream, length, self._body_timeout_s)
        return H2UpstreamResponse(stream, response_body, declared)

    async def _upload(
        self,
        conn: H3UpstreamConnection,
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
                # The backend acknowledged nothing of the upload for a whole body timeout.
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
        head_scope.deadline = trio.current_time() + self._head_timeout_s
