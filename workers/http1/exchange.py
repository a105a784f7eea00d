"""One proxied request/response exchange between an H1 client and an H1 upstream.

Owns: sending a request whose body is already parsed in one write and relaying the response
in the same task; streaming a body still arriving up while the response comes down
concurrently; each step bounded by its timeout (body idle, response head) through one moving
cancel-scope deadline per task, and by one read of window; coalescing the response head with
the body bytes already parsed; response re-framing for the client (HEAD/204/304, chunked,
until-close, HTTP/1.0); trailers; and the decision whether the upstream connection is clean
enough to pool. Must never choose a backend
or retry (``upstream`` does) and never parse bytes itself (``message_reader`` does).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from gateway.http.errors import BadGateway, BodyTooLarge, GatewayTimeout, HttpError, RequestTimeout
from gateway.http.framing import BodyFraming, BodyKind, response_body_framing
from gateway.http.h1_relay_heads import client_response_head
from gateway.http.h1_wire import encode_chunk, encode_last_chunk
from gateway.http.hop_by_hop import strip_hop_by_hop
from gateway.http.limits import HttpLimits
from gateway.http.model import HeaderList, comma_tokens, first_header
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
from workers.http1.socket_io import send_all


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


# What a lapsed step deadline (or a broken stream during that step) means; see Exchange._lapse.
UP_HEAD_WRITE = 0
UP_BODY_WRITE = 1
CLIENT_CONTINUE = 2
CLIENT_BODY_IDLE = 3
RESPONSE_HEAD = 4
UP_BODY_IDLE = 5
CLIENT_WRITE = 6
TOTAL = 7  # the request's total_timeout_ms, which bounds every step


class StepTimer:
    """One cancel scope per task whose deadline moves with each step, capped by the total.

    Entering and leaving a scope per send and per receive (plus one for the total timeout)
    cost more than the proxying itself; moving one deadline is a heap push. ``step``
    remembers which error a lapse means: the step's own, or TOTAL when the total deadline
    is the nearer one.
    """

    __slots__ = ("scope", "step", "total_at")

    def __init__(self, total_at: float, step: int, timeout_s: float = math.inf) -> None:
        # Born armed for its first step: a deadline set before the scope is entered costs
        # nothing extra.
        deadline = trio.current_time() + timeout_s
        if deadline >= total_at:
            deadline, step = total_at, TOTAL
        self.scope = trio.CancelScope(deadline=deadline)
        self.step = step
        self.total_at = total_at

    def arm(self, timeout_s: float, step: int) -> None:
        deadline = trio.current_time() + timeout_s
        if deadline >= self.total_at:
            deadline, step = self.total_at, TOTAL
        self.scope.deadline = deadline
        self.step = step


class Exchange:
    """Runs one exchange at a time for a client connection; ``s`` is the current request's."""

    __slots__ = (
        "body_timeout_s",
        "client",
        "client_reader",
        "conn_reused",
        "draining",
        "head_timeout_s",
        "limits",
        "relay_timer",
        "s",
        "total_at",
    )

    def __init__(
        self,
        state: ExchangeState | None,
        client: trio.abc.Stream,
        client_reader: MessageReader,
        limits: HttpLimits,
        draining: trio.Event | None = None,
    ) -> None:
        self.draining = draining
        self.s: ExchangeState = state  # type: ignore[assignment]  # set per request
        self.client = client
        self.client_reader = client_reader
        self.limits = limits
        self.body_timeout_s = limits.body_timeout_ms / 1000
        self.head_timeout_s = limits.head_timeout_ms / 1000
        self.relay_timer: StepTimer | None = None
        self.conn_reused = False
        self.total_at = math.inf  # the current request's total deadline, set per request

    async def run(self, conn: UpstreamConn, request_bytes: bytes) -> None:
        """Send the request and relay the response; failures surface as typed errors."""
        s = self.s
        s.failure = None
        s.upload_done = False
        self.conn_reused = conn.reused
        up_reader = conn.reader
        if up_reader is None or not up_reader.at_boundary:
            up_reader = conn.reader = MessageReader(conn.stream, self.limits, is_request=False)
        up_reader.begin_exchange()
        if s.request_framing.kind is BodyKind.NONE or (
            not s.expect_continue and self.client_reader.has_complete_message()
        ):
            await self._run_buffered(conn, up_reader, request_bytes)
        else:
            await self._run_streaming(conn, up_reader, request_bytes)
        if not s.upload_done:
            s.close_after = True
            s.upstream_reusable = False

    # ---- the common case: the whole request is here, one task, one scope ----------------------

    async def _run_buffered(
        self, conn: UpstreamConn, up_reader: MessageReader, request_bytes: bytes
    ) -> None:
        timer = StepTimer(self.total_at, UP_HEAD_WRITE, self.body_timeout_s)
        with timer.scope:
            await self._exchange_buffered(conn, up_reader, request_bytes, timer)
        if timer.scope.cancelled_caught:
            raise self._lapse(timer.step)

    async def _exchange_buffered(
        self, conn: UpstreamConn, up_reader: MessageReader, request_bytes: bytes, timer: StepTimer
    ) -> None:
        s = self.s
        if s.request_framing.kind is not BodyKind.NONE:
            request_bytes = self._with_buffered_body(request_bytes)
        await self._send(conn.stream, request_bytes, timer, UP_HEAD_WRITE, armed=True)
        if s.bytes_in:
            s.body_sent = True
        s.upload_done = True
        timer.arm(self.head_timeout_s, RESPONSE_HEAD)
        await self._relay_response(conn, up_reader, timer)

    def _with_buffered_body(self, request_bytes: bytes) -> bytes:
        """Head + the whole (already parsed) body in one write, re-framed for the next hop."""
        s = self.s
        chunked = s.request_framing.kind is BodyKind.CHUNKED
        parts = [request_bytes]
        events = self.client_reader.events
        while True:
            tag, payload = events.popleft()
            if tag == DATA:
                assert isinstance(payload, bytes)
                s.bytes_in += len(payload)
                if s.bytes_in > self.limits.max_body_bytes:
                    raise BodyTooLarge("request body over the cap")
                parts.append(encode_chunk(payload) if chunked else payload)
            elif tag == TRAILERS:
                assert isinstance(payload, list)
                s.request_trailers = strip_hop_by_hop(payload)
            elif tag == END:
                if chunked:
                    parts.append(encode_last_chunk(s.request_trailers))
                return b"".join(parts)
            else:
                raise BadGateway(f"unexpected client event {tag}", kind="internal")

    # ---- a body still arriving: upload and response relay run concurrently -------------------

    async def _run_streaming(
        self, conn: UpstreamConn, up_reader: MessageReader, request_bytes: bytes
    ) -> None:
        s = self.s
        await self._send_alone(conn.stream, request_bytes, UP_HEAD_WRITE)
        # No head deadline until the upload finishes (the total timeout covers a slow client).
        self.relay_timer = relay = StepTimer(self.total_at, RESPONSE_HEAD)
        try:
            async with trio.open_nursery() as nursery:
                if s.expect_continue:
                    await self._send_alone(self.client, CONTINUE_100, CLIENT_CONTINUE)
                upload = StepTimer(self.total_at, CLIENT_BODY_IDLE)
                nursery.start_soon(self._guard, nursery.cancel_scope, upload, self._upload, conn)
                await self._guard(
                    nursery.cancel_scope, relay, self._relay_response, conn, up_reader
                )
                if not s.upload_done:
                    nursery.cancel_scope.cancel()  # response complete: the upload stops here
        finally:
            self.relay_timer = None
        if s.failure is not None:
            raise s.failure

    async def _send_alone(self, stream: trio.abc.Stream, data: bytes, step: int) -> None:
        timer = StepTimer(self.total_at, step, self.body_timeout_s)
        with timer.scope:
            await self._send(stream, data, timer, step, armed=True)
        if timer.scope.cancelled_caught:
            raise self._lapse(step)

    async def _timed(
        self, timer: StepTimer, fn: Callable[..., Awaitable[None]], *args: object
    ) -> None:
        with timer.scope:
            await fn(*args, timer)
        if timer.scope.cancelled_caught:
            raise self._lapse(timer.step)

    async def _guard(
        self,
        scope: trio.CancelScope,
        timer: StepTimer,
        fn: Callable[..., Awaitable[None]],
        *args: object,
    ) -> None:
        try:
            await self._timed(timer, fn, *args)
        except HttpError as exc:
            if self.s.failure is None:
                self.s.failure = exc
            scope.cancel()

    def _upload_finished(self) -> None:
        self.s.upload_done = True
        relay = self.relay_timer
        if relay is not None and relay.step == RESPONSE_HEAD:
            relay.arm(self.head_timeout_s, RESPONSE_HEAD)

    async def _upload(self, conn: UpstreamConn, timer: StepTimer) -> None:
        s = self.s
        chunked = s.request_framing.kind is BodyKind.CHUNKED
        reader = self.client_reader
        while True:
            timer.arm(self.body_timeout_s, CLIENT_BODY_IDLE)
            tag, payload = await reader.next_event()
            if tag == DATA:
                assert isinstance(payload, bytes)
                s.bytes_in += len(payload)
                if s.bytes_in > self.limits.max_body_bytes:
                    raise BodyTooLarge("request body over the cap")
                out = encode_chunk(payload) if chunked else payload
                await self._send(conn.stream, out, timer, UP_BODY_WRITE)
                s.body_sent = True
            elif tag == TRAILERS:
                assert isinstance(payload, list)
                s.request_trailers = strip_hop_by_hop(payload)
            elif tag == END:
                if chunked:
                    last = encode_last_chunk(s.request_trailers)
                    await self._send(conn.stream, last, timer, UP_BODY_WRITE)
                self._upload_finished()
                return
            elif tag == EOF_EVENT:
                raise ClientGone("client closed during request body")
            else:
                raise BadGateway(f"unexpected client event {tag}", kind="internal")

    # ---- steps shared by both shapes -----------------------------------------------------------

    async def _send(
        self,
        stream: trio.abc.Stream,
        data: bytes,
        timer: StepTimer,
        step: int,
        *,
        armed: bool = False,
    ) -> None:
        """send_all within the body timeout (``armed``: the timer already holds it for this
        step); a broken stream means the same as a lapse of ``step``."""
        if not armed:
            timer.arm(self.body_timeout_s, step)
        try:
            await send_all(stream, data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._lapse(step) from None

    def _lapse(self, step: int) -> HttpError:
        """The typed error of a step that timed out or whose stream broke (built only then)."""
        if step == UP_HEAD_WRITE:
            if self.conn_reused:
                return StaleConnection()
            return BadGateway("upstream write failed", kind="upstream_write")
        if step == UP_BODY_WRITE:
            return BadGateway("upstream write failed", kind="upstream_write")
        if step == CLIENT_CONTINUE:
            return ClientGone()
        if step == CLIENT_BODY_IDLE:
            return RequestTimeout("request body idle", kind="body_timeout")
        if step == RESPONSE_HEAD:
            return GatewayTimeout("upstream response head timed out", kind="head_timeout")
        if step == UP_BODY_IDLE:
            return GatewayTimeout("upstream body idle", kind="upstream_body_timeout")
        if step == TOTAL:
            return GatewayTimeout("total request time exceeded", kind="total_timeout")
        return ClientGone("client write failed", kind="client_write")

    async def _read_final_head(self, conn: UpstreamConn, up_reader: MessageReader) -> ParsedHead:
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

    def _client_framing(self, up: BodyFraming) -> tuple[BodyFraming | None, bool]:
        """How the client receives the body, and whether that forces a close."""
        if up.kind is BodyKind.NONE:
            return None, False
        if up.kind is BodyKind.LENGTH:
            return up, False
        if self.s.client_version == b"1.1":
            return up if up.kind is BodyKind.CHUNKED else BodyFraming(BodyKind.CHUNKED), False
        return BodyFraming(BodyKind.UNTIL_CLOSE), True  # HTTP/1.0: raw bytes, then close

    async def _relay_response(
        self, conn: UpstreamConn, up_reader: MessageReader, timer: StepTimer
    ) -> None:
        s = self.s
        head = await self._read_final_head(conn, up_reader)
        if head.status == 101:
            raise BadGateway("unsolicited 101 from upstream", kind="upstream_protocol")
        up_framing = response_body_framing(head.status, s.method, head.headers)
        client_framing, must_close = self._client_framing(up_framing)
        # Drain may have begun while the backend worked: this response announces the close.
        draining = self.draining is not None and self.draining.is_set()
        s.close_after = s.close_after or must_close or draining
        declared: int | None = None
        if client_framing is None and head.status != 204 and not 100 <= head.status < 200:
            cl = first_header(head.headers, b"content-length")
            declared = int(cl) if cl is not None and cl.isdigit() else None
        wire = client_response_head(
            head.status,
            reason_for(head.status),
            head.headers,
            client_framing,
            close=s.close_after,
            declared_length=declared,
        )
        s.status = head.status
        clean = await self._relay_response_body(up_reader, up_framing, client_framing, wire, timer)
        up_keep = head.http_version == b"1.1" and b"close" not in comma_tokens(
            head.headers, b"connection"
        )
        s.upstream_reusable = clean and up_keep and s.upload_done

    async def _flush(self, pending: list[bytes], timer: StepTimer) -> None:
        """Write what is pending to the client in one send: head and body parts coalesce."""
        if pending:
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            await self._send(self.client, data, timer, CLIENT_WRITE)
            self.s.response_started = True

    async def _relay_response_body(
        self,
        up_reader: MessageReader,
        up: BodyFraming,
        client_framing: BodyFraming | None,
        head_wire: bytes,
        timer: StepTimer,
    ) -> bool:
        """Stream the body after ``head_wire``; True when the upstream is left exactly at a
        message boundary. Whatever is already parsed goes out with the head in one write (at
        most one read's worth, so the window stays bounded); the head never waits for body."""
        s = self.s
        pending = [head_wire]
        events = up_reader.events
        if client_framing is None:
            await self._flush(pending, timer)
            if events and events[0][0] == END:
                events.popleft()
            no_leftover = not events and not up_reader.in_message
            return no_leftover or (
                s.method == b"HEAD" and up_reader.last_feed_clean_head_end and not events
            )
        chunked_out = client_framing.kind is BodyKind.CHUNKED
        trailers: HeaderList = []
        while True:
            if not events:
                await self._flush(pending, timer)
                timer.arm(self.body_timeout_s, UP_BODY_IDLE)
                await up_reader.fill()
                continue
            tag, payload = events.popleft()
            if tag == DATA:
                assert isinstance(payload, bytes)
                s.bytes_out += len(payload)
                pending.append(encode_chunk(payload) if chunked_out else payload)
            elif tag == TRAILERS:
                assert isinstance(payload, list)
                trailers = strip_hop_by_hop(payload)
            elif tag == END or (tag == EOF_EVENT and up.kind is BodyKind.UNTIL_CLOSE):
                if chunked_out:
                    pending.append(encode_last_chunk(trailers))
                await self._flush(pending, timer)
                return tag == END and not events and up.kind is not BodyKind.UNTIL_CLOSE
            else:
                await self._flush(pending, timer)  # the client gets what arrived, then a close
                if tag == EOF_EVENT:
                    raise BadGateway("upstream closed mid-body", kind="upstream_truncated")
                raise BadGateway(f"unexpected upstream event {tag}", kind="upstream_protocol")
