"""The HTTP/1.1 back adapter of the general proxy core: neutral request in, response out.

Owns: serialising the neutral head for an HTTP/1.1 next hop (Host first, Content-Length
when the body's length is known, chunked otherwise), the upload task (body idle timeout
per write), reading the final response head (interim 1xx skipped; the head timeout armed
once the upload finished), the response body as a BodySource that never ends cleanly on a
truncation, and returning the connection to the bounded pool only after a clean exchange
(workers/http1/pool). Must never pick a backend or retry (the core does).
"""

from __future__ import annotations

import trio

from gateway.http.errors import BadGateway, HttpError
from gateway.http.framing import BodyKind, response_body_framing
from gateway.http.h1_wire import encode_chunk, encode_last_chunk
from gateway.http.limits import HttpLimits
from gateway.http.model import RequestHead, ResponseHead, comma_tokens, first_header
from gateway.http.responses import reason_for
from workers.http.back import UpstreamLost, UpstreamResponse
from workers.http.body import BodySource
from workers.http.h1_body_events import next_body_event
from workers.http1.backend import Backend, Connect
from workers.http1.exchange_steps import RESPONSE_HEAD, UP_BODY_IDLE, UP_BODY_WRITE, lapse_error
from workers.http1.message_reader import (
    DATA,
    END,
    EOF_EVENT,
    HEAD,
    TRAILERS,
    MessageReader,
    ParsedHead,
)
from workers.http1.pool import UpstreamConn, UpstreamPool
from workers.http1.socket_io import send_now, send_rest

_BODY_METHODS = frozenset((b"POST", b"PUT", b"PATCH"))


def request_head_bytes(head: RequestHead, length: int | None) -> bytes:
    """The HTTP/1.1 request head: request line, Host, the fields, then the framing."""
    lines = [head.method + b" " + head.path + b" HTTP/1.1", b"host: " + head.authority]
    lines += [n + b": " + v for n, v in head.headers]
    if length is None:
        lines.append(b"transfer-encoding: chunked")
    elif length > 0 or head.method in _BODY_METHODS:
        lines.append(b"content-length: %d" % length)
    return b"\r\n".join(lines) + b"\r\n\r\n"


class _Upload:
    __slots__ = ("done", "failed", "head_scope", "head_timeout_s")

    def __init__(self, done: bool, head_timeout_s: float) -> None:
        self.done = done
        self.failed = False
        self.head_timeout_s = head_timeout_s
        self.head_scope: trio.CancelScope | None = None

    def finished(self) -> None:
        self.done = True
        if self.head_scope is not None:
            self.head_scope.deadline = trio.current_time() + self.head_timeout_s


class H1ResponseBody(BodySource):
    """The response body read from the upstream connection, one parsed read at a time."""

    def __init__(
        self, reader: MessageReader, until_close: bool, length: int | None, idle_s: float
    ) -> None:
        super().__init__(length)
        self.reader = reader
        self.until_close = until_close
        self.idle_s = idle_s
        # A body-less response (HEAD, 204, 304) ends with its head.
        self.ended = length == 0

    async def receive(self) -> bytes:
        self.started = True
        if self.ended:
            return b""
        reader = self.reader
        while True:
            tag, payload = await next_body_event(reader, self.idle_s, UP_BODY_IDLE)
            if tag == DATA:
                assert isinstance(payload, bytes)
                self.received_bytes += len(payload)
                return payload
            if tag == TRAILERS:
                assert isinstance(payload, list)
                self.trailers = payload
            elif tag == END or (tag == EOF_EVENT and self.until_close and not reader.eof_error):
                self.ended = True
                return b""
            elif tag == EOF_EVENT and self.until_close:
                # Reset, or TLS ended without close_notify: a close-delimited body that
                # cannot be told from a truncated one is never passed on as complete.
                raise BadGateway("upstream connection reset mid-body", kind="upstream_reset")
            elif tag == EOF_EVENT:
                raise BadGateway("upstream closed mid-body", kind="upstream_truncated")
            else:
                raise BadGateway(f"unexpected upstream event {tag}", kind="upstream_protocol")


class H1UpstreamResponse(UpstreamResponse):
    def __init__(
        self,
        head: ResponseHead,
        body: H1ResponseBody,
        declared_length: int | None,
        back: H1Back,
        conn: UpstreamConn,
        upload: _Upload,
        keep_alive: bool,
        head_request: bool,
    ) -> None:
        super().__init__(head, body, declared_length)
        self._head_request = head_request
        self._back = back
        self._conn = conn
        self._upload = upload
        self._keep_alive = keep_alive

    async def release(self, *, complete: bool) -> None:
        body = self.body
        assert isinstance(body, H1ResponseBody)
        events = body.reader.events
        if body.length == 0 and events and events[0][0] == END:
            events.popleft()  # the parser's end of a body-less message (204, 304)
        # After HEAD the parser still expects the body the head declared: the connection is
        # clean only when the head ended exactly with the last bytes read (the pool then
        # drops this parser and the next exchange builds a fresh one).
        reader = body.reader
        clean_head = self._head_request and reader.last_feed_clean_head_end and not events
        reusable = (
            complete
            and self._keep_alive
            and self._upload.done
            and not self._upload.failed
            and not body.until_close
            and (reader.at_boundary or clean_head)
        )
        pool = self._back.pool
        if not pool.keep(self._conn, reusable=reusable):
            await pool.discard(self._conn)


class H1Back:
    """HTTP/1.1 upstream client over the listener's bounded connection pool."""

    protocol = "h1"

    def __init__(self, limits: HttpLimits, connect: Connect | None = None) -> None:
        self.limits = limits
        self.pool = UpstreamPool(limits.pool, connect)
        self.body_timeout_s = limits.body_timeout_ms / 1000
        self.head_timeout_s = limits.head_timeout_ms / 1000

    async def aclose(self) -> None:
        await self.pool.aclose()

    async def open_exchange(
        self, nursery: trio.Nursery, backend: Backend, head: RequestHead, body: BodySource
    ) -> UpstreamResponse:
        tunnel = body.streaming  # an upload that may take as long as its client likes
        conn = self.pool.take_idle(backend, tunnel=tunnel)
        if conn is None:
            conn = await self.pool.acquire(backend, tunnel=tunnel)
        handed_over = False
        try:
            response = await self._exchange(nursery, conn, head, body)
            handed_over = True
            return response
        finally:
            if not handed_over:
                with trio.CancelScope(shield=True):
                    await self.pool.discard(conn)

    async def _send(self, conn: UpstreamConn, data: bytes, *, head: bool) -> None:
        """Write ``data``; the body timeout bounds only a wait for room (most writes finish
        at once, without a cancel scope or a scheduling point)."""
        try:
            sent = send_now(conn.stream, data)
            if sent == len(data):
                return
            with trio.move_on_after(self.body_timeout_s) as scope:
                await send_rest(conn.stream, data, sent)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if head and conn.reused:
                raise UpstreamLost("reused upstream connection closed") from None
            raise BadGateway("upstream closed while sending", kind="upstream_write") from None
        if scope.cancelled_caught:
            raise lapse_error(UP_BODY_WRITE, conn.reused)

    async def _exchange(
        self, nursery: trio.Nursery, conn: UpstreamConn, head: RequestHead, body: BodySource
    ) -> UpstreamResponse:
        upload = _Upload(done=body.length == 0, head_timeout_s=self.head_timeout_s)
        await self._send(conn, request_head_bytes(head, body.length), head=True)
        if not upload.done:
            nursery.start_soon(self._upload, conn, body, upload)
        reader = conn.reader
        if reader is None or not reader.at_boundary:
            reader = conn.reader = MessageReader(conn.stream, self.limits, is_request=False)
        reader.begin_exchange()
        reader.wait_first = True  # the answer takes a round trip: wait, then read once
        with trio.CancelScope() as scope:
            upload.head_scope = scope
            if upload.done:
                upload.finished()
            parsed = await self._final_head(conn, reader, body)
        upload.head_scope = None
        if scope.cancelled_caught:
            raise lapse_error(RESPONSE_HEAD, conn.reused)
        if parsed.status == 101:
            raise BadGateway("unsolicited 101 from upstream", kind="upstream_protocol")
        framing = response_body_framing(parsed.status, head.method, parsed.headers)
        declared: int | None = None
        length: int | None = None
        if framing.kind is BodyKind.NONE:
            length = 0
            if parsed.status != 204:  # HEAD and 304 still state the length they stand for
                cl = first_header(parsed.headers, b"content-length")
                declared = int(cl) if cl is not None and cl.isdigit() else None
        elif framing.kind is BodyKind.LENGTH:
            length = declared = framing.length
        response_body = H1ResponseBody(
            reader, framing.kind is BodyKind.UNTIL_CLOSE, length, self.body_timeout_s
        )
        keep_alive = parsed.http_version == b"1.1" and b"close" not in comma_tokens(
            parsed.headers, b"connection"
        )
        return H1UpstreamResponse(
            ResponseHead(
                parsed.status,
                reason_for(parsed.status),
                parsed.headers,
                http_version=parsed.http_version,
            ),
            response_body,
            declared,
            self,
            conn,
            upload,
            keep_alive,
            head.method == b"HEAD",
        )

    async def _final_head(
        self, conn: UpstreamConn, reader: MessageReader, body: BodySource
    ) -> ParsedHead:
        while True:
            tag, payload = await reader.next_event()
            if tag == HEAD:
                assert isinstance(payload, ParsedHead)
                if 100 <= payload.status < 200 and payload.status != 101:
                    continue  # interim responses are the front's to send
                return payload
            if tag == END:
                continue  # the end of an interim response
            if tag == EOF_EVENT:
                if conn.reused and reader.bytes_read == 0 and not body.started:
                    raise UpstreamLost("reused upstream connection closed")
                raise BadGateway("upstream closed before response head", kind="upstream_eof")
            raise BadGateway(f"unexpected upstream event {tag}", kind="upstream_protocol")

    async def _upload(self, conn: UpstreamConn, body: BodySource, upload: _Upload) -> None:
        """Client body to the backend. A client-side failure ends the exchange; a failed write
        ends only the upload: a backend that answers early (401, 413) and closes has its
        answer relayed (the response read goes on), and the connection is not reused."""
        chunked = body.length is None
        try:
            while True:
                chunk = await body.receive()
                if not chunk:
                    break
                await self._send(conn, encode_chunk(chunk) if chunked else chunk, head=False)
            if chunked:
                await self._send(conn, encode_last_chunk(body.trailers), head=False)
        except BadGateway:  # the backend stopped taking the upload (writes only raise it)
            upload.failed = True
        except HttpError:
            upload.failed = True
            raise
        upload.finished()
