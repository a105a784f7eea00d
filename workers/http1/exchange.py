"""One proxied request/response exchange between an H1 client and an H1 upstream.

Owns: streaming the request body up and the response body down concurrently, each step
bounded by the body idle timeout and one read of window; the response-head timeout; response
re-framing for the client (HEAD/204/304, chunked, until-close, HTTP/1.0); trailers; and the
decision whether the upstream connection is clean enough to pool. Must never choose a backend
or retry (``upstream`` does) and never parse bytes itself (``message_reader`` does).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from gateway.http.errors import BadGateway, BodyTooLarge, GatewayTimeout, HttpError, RequestTimeout
from gateway.http.framing import BodyFraming, BodyKind, response_body_framing
from gateway.http.h1_wire import encode_chunk, encode_last_chunk, serialize_response_head
from gateway.http.hop_by_hop import strip_hop_by_hop
from gateway.http.limits import HttpLimits
from gateway.http.model import HeaderList, ResponseHead, comma_tokens, first_header
from gateway.http.responses import CONTINUE_100, reason_for
from workers.http1.message_reader import (
    DATA,
    END,
    EOF_EVENT,
    HEAD,
    TRAILERS,
    MessageReader,
    ParsedHead,
)
from workers.http1.pool import UpstreamConn

_FRAMING_FIELDS = frozenset((b"content-length", b"transfer-encoding"))


class StaleConnection(BadGateway):
    """A reused upstream connection died before it produced any response byte."""

    kind = "stale_connection"


class ClientGone(HttpError):
    status = 400
    kind = "client_abort"


@dataclass(slots=True)
class ExchangeState:
    """What one request carried; read by the connection for its access record."""

    method: bytes
    client_version: bytes
    request_framing: BodyFraming
    expect_continue: bool
    close_after: bool
    bytes_in: int = 0
    bytes_out: int = 0
    status: int = 0
    response_started: bool = False
    upload_done: bool = False
    body_sent: bool = False
    upstream_reusable: bool = False
    backend_id: str | None = None
    failure: HttpError | None = None
    request_trailers: HeaderList = field(default_factory=list)


async def send_bounded(
    stream: trio.abc.Stream, data: bytes, timeout_s: float, err: HttpError
) -> None:
    """send_all within ``timeout_s``; any failure becomes ``err`` (translated once, here)."""
    try:
        with trio.fail_after(timeout_s):
            await stream.send_all(data)
    except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
        raise err


async def next_event_bounded(
    reader: MessageReader, timeout_s: float, err: HttpError
) -> tuple[str, object]:
    with trio.move_on_after(timeout_s) as scope:
        return await reader.next_event()
    assert scope.cancelled_caught
    raise err


class Exchange:
    def __init__(
        self,
        state: ExchangeState,
        client: trio.abc.Stream,
        client_reader: MessageReader,
        limits: HttpLimits,
        draining: trio.Event | None = None,
    ) -> None:
        self.draining = draining
        self.s = state
        self.client = client
        self.client_reader = client_reader
        self.limits = limits
        self.body_timeout_s = limits.body_timeout_ms / 1000
        self.head_scope = trio.CancelScope(deadline=math.inf)

    async def run(self, conn: UpstreamConn, request_bytes: bytes) -> None:
        """Send the request and relay the response; failures surface as typed errors."""
        s = self.s
        s.failure = None
        s.upload_done = False
        self.head_scope = trio.CancelScope(deadline=math.inf)
        up_reader = MessageReader(conn.stream, self.limits, is_request=False)
        stale_or_bad = (
            StaleConnection()
            if conn.reused
            else BadGateway("upstream write failed", kind="upstream_write")
        )
        await send_bounded(conn.stream, request_bytes, self.body_timeout_s, stale_or_bad)
        async with trio.open_nursery() as nursery:
            if s.request_framing.kind is BodyKind.NONE:
                self._upload_finished()
            else:
                if s.expect_continue:
                    await send_bounded(self.client, CONTINUE_100, self.body_timeout_s, ClientGone())
                nursery.start_soon(self._guard, self._upload, conn, nursery.cancel_scope)
            await self._guard(self._relay_response, conn, up_reader, nursery.cancel_scope)
            nursery.cancel_scope.cancel()  # response complete: an unfinished upload stops here
        if s.failure is not None:
            raise s.failure
        if not s.upload_done:
            s.close_after = True
            s.upstream_reusable = False

    async def _guard(self, fn: Callable[..., Awaitable[None]], *args: object) -> None:
        *call_args, scope = args
        try:
            await fn(*call_args)
        except HttpError as exc:
            if self.s.failure is None:
                self.s.failure = exc
            assert isinstance(scope, trio.CancelScope)
            scope.cancel()

    def _upload_finished(self) -> None:
        self.s.upload_done = True
        self.head_scope.deadline = trio.current_time() + self.limits.head_timeout_ms / 1000

    async def _upload(self, conn: UpstreamConn) -> None:
        s = self.s
        chunked = s.request_framing.kind is BodyKind.CHUNKED
        up_err = BadGateway("upstream write failed", kind="upstream_write")
        idle_err = RequestTimeout("request body idle", kind="body_timeout")
        while True:
            tag, payload = await next_event_bounded(
                self.client_reader, self.body_timeout_s, idle_err
            )
            if tag == DATA:
                assert isinstance(payload, bytes)
                s.bytes_in += len(payload)
                if s.bytes_in > self.limits.max_body_bytes:
                    raise BodyTooLarge("request body over the cap")
                out = encode_chunk(payload) if chunked else payload
                await send_bounded(conn.stream, out, self.body_timeout_s, up_err)
                s.body_sent = True
            elif tag == TRAILERS:
                assert isinstance(payload, list)
                s.request_trailers = strip_hop_by_hop(payload)
            elif tag == END:
                if chunked:
                    last = encode_last_chunk(s.request_trailers)
                    await send_bounded(conn.stream, last, self.body_timeout_s, up_err)
                self._upload_finished()
                return
            elif tag == EOF_EVENT:
                raise ClientGone("client closed during request body")
            else:
                raise BadGateway(f"unexpected client event {tag}", kind="internal")

    async def _read_final_head(self, conn: UpstreamConn, up_reader: MessageReader) -> ParsedHead:
        with self.head_scope:
            while True:
                tag, payload = await up_reader.next_event()
                if tag == HEAD:
                    assert isinstance(payload, ParsedHead)
                    if 100 <= payload.status < 200 and payload.status != 101:
                        continue  # interim responses are ours to send (we answer Expect)
                    return payload
                if tag == END:
                    continue  # end of an interim response
                if tag == EOF_EVENT:
                    if conn.reused and not self.s.body_sent and up_reader.bytes_read == 0:
                        raise StaleConnection()
                    raise BadGateway("upstream closed before response head", kind="upstream_eof")
                raise BadGateway(f"unexpected upstream event {tag}", kind="upstream_protocol")
        raise GatewayTimeout("upstream response head timed out", kind="head_timeout")

    def _client_framing(self, up: BodyFraming) -> tuple[BodyFraming | None, bool]:
        """How the client receives the body, and whether that forces a close."""
        if up.kind is BodyKind.NONE:
            return None, False
        if up.kind is BodyKind.LENGTH:
            return up, False
        if self.s.client_version == b"1.1":
            return up if up.kind is BodyKind.CHUNKED else BodyFraming(BodyKind.CHUNKED), False
        return BodyFraming(BodyKind.UNTIL_CLOSE), True  # HTTP/1.0: raw bytes, then close

    async def _relay_response(self, conn: UpstreamConn, up_reader: MessageReader) -> None:
        s = self.s
        head = await self._read_final_head(conn, up_reader)
        if head.status == 101:
            raise BadGateway("unsolicited 101 from upstream", kind="upstream_protocol")
        up_framing = response_body_framing(head.status, s.method, head.headers)
        client_framing, must_close = self._client_framing(up_framing)
        # Drain may have begun while the backend worked: this response announces the close.
        draining = self.draining is not None and self.draining.is_set()
        s.close_after = s.close_after or must_close or draining
        headers = [(n, v) for n, v in strip_hop_by_hop(head.headers) if n not in _FRAMING_FIELDS]
        declared: int | None = None
        if client_framing is None and head.status != 204 and not 100 <= head.status < 200:
            cl = first_header(head.headers, b"content-length")
            declared = int(cl) if cl is not None and cl.isdigit() else None
        out_head = ResponseHead(head.status, reason_for(head.status), headers)
        wire = serialize_response_head(
            out_head, client_framing, close=s.close_after, declared_length=declared
        )
        s.status = head.status
        client_err = ClientGone("client write failed", kind="client_write")
        await send_bounded(self.client, wire, self.body_timeout_s, client_err)
        s.response_started = True
        clean = await self._relay_response_body(up_reader, up_framing, client_framing)
        up_keep = head.http_version == b"1.1" and b"close" not in comma_tokens(
            head.headers, b"connection"
        )
        s.upstream_reusable = clean and up_keep and s.upload_done

    async def _relay_response_body(
        self, up_reader: MessageReader, up: BodyFraming, client_framing: BodyFraming | None
    ) -> bool:
        """Stream the body; True when the upstream is left exactly at a message boundary."""
        s = self.s
        if client_framing is None:
            if up_reader.events and up_reader.events[0][0] == END:
                up_reader.events.popleft()
            no_leftover = not up_reader.events and not up_reader.in_message
            return no_leftover or (
                s.method == b"HEAD" and up_reader.last_feed_clean_head_end and not up_reader.events
            )
        chunked_out = client_framing.kind is BodyKind.CHUNKED
        idle_err = GatewayTimeout("upstream body idle", kind="upstream_body_timeout")
        client_err = ClientGone("client write failed", kind="client_write")
        trailers: HeaderList = []
        while True:
            tag, payload = await next_event_bounded(up_reader, self.body_timeout_s, idle_err)
            if tag == DATA:
                assert isinstance(payload, bytes)
                s.bytes_out += len(payload)
                out = encode_chunk(payload) if chunked_out else payload
                await send_bounded(self.client, out, self.body_timeout_s, client_err)
            elif tag == TRAILERS:
                assert isinstance(payload, list)
                trailers = strip_hop_by_hop(payload)
            elif tag == END or (tag == EOF_EVENT and up.kind is BodyKind.UNTIL_CLOSE):
                if chunked_out:
                    last = encode_last_chunk(trailers)
                    await send_bounded(self.client, last, self.body_timeout_s, client_err)
                return tag == END and not up_reader.events and up.kind is not BodyKind.UNTIL_CLOSE
            elif tag == EOF_EVENT:
                raise BadGateway("upstream closed mid-body", kind="upstream_truncated")
            else:
                raise BadGateway(f"unexpected upstream event {tag}", kind="upstream_protocol")
