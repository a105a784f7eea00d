"""One proxied request/response exchange between an H1 client and an H1 upstream.

Owns: choosing the exchange's shape (``buffered_request``: the whole request is here, one
task; ``streaming_request``: a body still arriving, upload beside the response relay), the
per-request state the connection records, and the response relay both shapes share: the
final head (interim responses skipped), re-framing for the client (HEAD/204/304, chunked,
until-close, HTTP/1.0; a close-delimited body cut by a reset or a TLS end without
close_notify is relayed without its terminator, then the close), trailers, coalescing the response head with the body bytes already
parsed (at most one read's worth, so the window stays bounded), each step under the task's
moving deadline (``exchange_steps``), and the decision whether the upstream connection is
clean enough to pool. Must never choose a backend or retry (``upstream`` does) and never
parse bytes itself (``message_reader`` does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import trio

from gateway.http.errors import BadGateway, HttpError
from gateway.http.framing import NO_BODY, BodyFraming, BodyKind, response_body_framing
from gateway.http.h1_relay_heads import client_response_head
from gateway.http.h1_wire import encode_chunk, encode_last_chunk
from gateway.http.hop_by_hop import strip_hop_by_hop
from gateway.http.limits import HttpLimits
from gateway.http.model import HeaderList, comma_tokens, first_header
from gateway.http.responses import reason_for
from workers.http1.buffered_request import run_buffered
from workers.http1.deadline_watch import LazyDeadline
from workers.http1.dispatch import trap
from workers.http1.exchange_steps import (
    CLIENT_WRITE,
    UP_BODY_IDLE,
    ClientGone,
    StaleConnection,
    StepTimer,
    lapse_error,
)
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
from workers.http1.socket_io import send_now, send_rest
from workers.http1.streaming_request import run_streaming
from workers.readiness import DRIVING, RESIDENT, TO_TRIO

__all__ = ["ClientGone", "Exchange", "ExchangeState", "StaleConnection"]

# What an exchange step arms: either form has ``arm(timeout_s, step)``.
Timer = StepTimer | LazyDeadline


# init=False + explicit __init__: mypyc builds it natively (a generated __init__ runs interpreted).
@dataclass(slots=True, init=False)
class ExchangeState:
    """What one request carried; read by the connection for its access record."""

    method: bytes
    client_version: bytes
    request_framing: BodyFraming
    expect_continue: bool
    close_after: bool
    bytes_in: int
    bytes_out: int
    status: int
    response_started: bool
    upload_done: bool
    body_sent: bool
    upstream_reusable: bool
    client_until_close: bool  # the client's body ends at our close (an HTTP/1.0 client)
    backend_id: str | None
    failure: HttpError | None
    request_trailers: HeaderList

    def __init__(
        self,
        method: bytes,
        client_version: bytes,
        request_framing: BodyFraming,
        expect_continue: bool,
        close_after: bool,
    ) -> None:
        self.method = method
        self.client_version = client_version
        self.request_framing = request_framing
        self.expect_continue = expect_continue
        self.close_after = close_after
        self.bytes_in = 0
        self.bytes_out = 0
        self.status = 0
        self.response_started = False
        self.upload_done = False
        self.body_sent = False
        self.upstream_reusable = False
        self.client_until_close = False
        self.backend_id = None
        self.failure = None
        self.request_trailers = []


class Exchange:
    """Runs one exchange at a time for a client connection; ``s`` is the current request's."""

    __slots__ = (
        "body_timeout_s",
        "client",
        "client_reader",
        "conn_reused",
        "deadline",
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
        deadline: LazyDeadline,
        draining: trio.Event | None = None,
    ) -> None:
        self.draining = draining
        # The current request's state, set per request (a closed placeholder until then).
        self.s: ExchangeState = (
            state
            if state is not None
            else ExchangeState(
                method=b"",
                client_version=b"1.1",
                request_framing=NO_BODY,
                expect_continue=False,
                close_after=True,
            )
        )
        self.client = client
        self.client_reader = client_reader
        self.limits = limits
        self.body_timeout_s = limits.body_timeout_ms / 1000
        self.head_timeout_s = limits.head_timeout_ms / 1000
        self.relay_timer: StepTimer | None = None
        # The connection's deadline, which the buffered shape moves.
        self.deadline = deadline
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
        if self.streams_upload():
            if DRIVING.mode == RESIDENT:
                await trap(TO_TRIO)  # a nursery and cancel scopes: trio's
            await run_streaming(self, conn, up_reader, request_bytes)
        else:
            await run_buffered(self, conn, up_reader, request_bytes)
        if not s.upload_done:
            s.close_after = True
            s.upstream_reusable = False

    def streams_upload(self) -> bool:
        """The request's body is still arriving (or waits for 100 Continue): the streaming
        shape, whose upstream connection is held as long as the client takes (a tunnel)."""
        s = self.s
        return s.request_framing.kind is not BodyKind.NONE and (
            s.expect_continue or not self.client_reader.has_complete_message()
        )

    # ---- steps shared by both shapes (called by buffered_request and streaming_request) ----

    async def send(
        self,
        stream: trio.abc.Stream,
        data: bytes,
        timer: Timer,
        step: int,
        *,
        armed: bool = False,
    ) -> None:
        """send_all within the body timeout; a broken stream means a lapse of ``step``.

        The timeout bounds waiting for room, so ``timer`` is armed for ``step`` (unless
        ``armed``: it already holds it) only when the kernel did not take it all at once.
        """
        try:
            sent = send_now(stream, data)
            if sent < len(data):
                if not armed:
                    timer.arm(self.body_timeout_s, step)
                await send_rest(stream, data, sent)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise lapse_error(step, self.conn_reused) from None

    def lapse(self, step: int) -> HttpError:
        """The typed error of a step that timed out or whose stream broke."""
        return lapse_error(step, self.conn_reused)

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

    async def relay_response(
        self, conn: UpstreamConn, up_reader: MessageReader, timer: Timer
    ) -> None:
        s = self.s
        head = await self._read_final_head(conn, up_reader)
        if head.status == 101:
            raise BadGateway("unsolicited 101 from upstream", kind="upstream_protocol")
        up_framing = response_body_framing(head.status, s.method, head.headers)
        client_framing, must_close = self._client_framing(up_framing)
        s.client_until_close = must_close
        # Drain may have begun while the backend worked: this response announces the close.
        draining = self.draining is not None and self.draining.is_set()
        # A final answer while the upload still streams (an early 401/413) ends the
        # connection unless the upload finishes first: announce the close now.
        s.close_after = s.close_after or must_close or draining or not s.upload_done
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

    async def _flush(self, pending: list[bytes], timer: Timer) -> None:
        """Write what is pending to the client in one send: head and body parts coalesce."""
        if pending:
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            await self.send(self.client, data, timer, CLIENT_WRITE)
            self.s.response_started = True

    async def _relay_response_body(
        self,
        up_reader: MessageReader,
        up: BodyFraming,
        client_framing: BodyFraming | None,
        head_wire: bytes,
        timer: Timer,
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
            elif tag == END or (
                # A close-delimited body ends at a clean close only: a reset or a TLS end
                # without close_notify truncates it (RFC 9112 §6.3, RFC 8446 §6.1), and the
                # client must see that as a missing terminator, never a complete body.
                tag == EOF_EVENT and up.kind is BodyKind.UNTIL_CLOSE and not up_reader.eof_error
            ):
                if chunked_out:
                    pending.append(encode_last_chunk(trailers))
                await self._flush(pending, timer)
                return tag == END and not events and up.kind is not BodyKind.UNTIL_CLOSE
            else:
                await self._flush(pending, timer)  # the client gets what arrived, then a close
                if tag == EOF_EVENT:
                    if up_reader.eof_error:
                        raise BadGateway("upstream reset mid-body", kind="upstream_reset")
                    raise BadGateway("upstream closed mid-body", kind="upstream_truncated")
                raise BadGateway(f"unexpected upstream event {tag}", kind="upstream_protocol")
