"""The HTTP/1.1 front adapter of the general proxy core.

Owns the two H1 pieces the core needs from a client connection the H1 connection loop
(workers/http1/connection) already admitted: the request body as a BodySource read from the
connection's parser (lazy ``100 Continue``, the body cap, the idle timeout, trailers without
hop-by-hop fields; a client that leaves mid-body is an error, never an end) and the
response sink that frames the neutral response for this client (Content-Length when known,
chunked for HTTP/1.1 otherwise, until-close for HTTP/1.0; trailers only when chunked; the
head written with the first body bytes; an abort closes without the chunked terminator).
The connection loop calls ``general_exchange`` for listeners served by the general core.
Must never parse bytes itself or pick backends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from gateway.http.errors import BodyTooLarge, HttpError
from gateway.http.framing import BodyFraming, BodyKind
from gateway.http.h1_wire import encode_chunk, encode_last_chunk, serialize_response_head
from gateway.http.hop_by_hop import strip_hop_by_hop
from gateway.http.model import HeaderList, RequestHead, ResponseHead
from gateway.http.responses import CONTINUE_100, error_response_h1, reason_for
from workers.http.body import BodySource
from workers.http.context import ProxyContext
from workers.http.core import proxy_exchange
from workers.http.h1_body_events import next_body_event
from workers.http1.context import RequestRecord
from workers.http1.exchange import ExchangeState
from workers.http1.exchange_steps import CLIENT_BODY_IDLE, ClientGone
from workers.http1.message_reader import DATA, END, EOF_EVENT, TRAILERS, MessageReader


class H1RequestBody(BodySource):
    def __init__(
        self,
        reader: MessageReader,
        client: trio.abc.Stream,
        framing: BodyFraming,
        *,
        max_body_bytes: int,
        idle_s: float,
        expect_continue: bool,
    ) -> None:
        kind = framing.kind
        super().__init__(
            framing.length if kind is BodyKind.LENGTH else 0 if kind is BodyKind.NONE else None
        )
        self.reader = reader
        self.client = client
        self.max_body_bytes = max_body_bytes
        self.idle_s = idle_s
        self.expect_continue = expect_continue
        self.ended = self.length == 0
        self.streaming = not self.ended and (expect_continue or not reader.has_complete_message())

    async def receive(self) -> bytes:
        self.started = True
        if self.ended:
            return b""
        if self.expect_continue:
            self.expect_continue = False
            with trio.move_on_after(self.idle_s):
                try:
                    await self.client.send_all(CONTINUE_100)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    raise ClientGone("client closed before its body") from None
        reader = self.reader
        while True:
            tag, payload = await next_body_event(reader, self.idle_s, CLIENT_BODY_IDLE)
            if tag == DATA:
                assert isinstance(payload, bytes)
                self.received_bytes += len(payload)
                if self.received_bytes > self.max_body_bytes:
                    raise BodyTooLarge("request body over the cap")
                return payload
            if tag == TRAILERS:
                assert isinstance(payload, list)
                self.trailers = strip_hop_by_hop(payload)
            elif tag == END:
                self.ended = True
                return b""
            elif tag == EOF_EVENT:
                raise ClientGone("client closed during request body")
            else:
                raise ClientGone(f"unexpected client event {tag}")


class H1ResponseSink:
    def __init__(self, client: trio.abc.Stream, state: ExchangeState, ctx: ProxyContext) -> None:
        self.client = client
        self.state = state
        self.ctx = ctx
        self.idle_s = ctx.limits.body_timeout_ms / 1000
        self.started = False
        self.bytes_out = 0
        self.chunked = False
        self.pending = b""

    async def send_head(self, head: ResponseHead, *, length: int | None, end: bool) -> None:
        s = self.state
        framing: BodyFraming | None = None
        declared: int | None = None
        if end:
            declared = length
        elif length is not None:
            framing = BodyFraming(BodyKind.LENGTH, length)
        elif s.client_version == b"1.1":
            framing = BodyFraming(BodyKind.CHUNKED)
            self.chunked = True
        else:
            framing = BodyFraming(BodyKind.UNTIL_CLOSE)
            s.close_after = s.client_until_close = True  # an abort must then reset
        if self.ctx.draining.is_set():
            s.close_after = True  # this response announces the close
        wire = serialize_response_head(
            ResponseHead(head.status, reason_for(head.status), head.headers),
            framing,
            close=s.close_after,
            declared_length=declared,
        )
        self.started = s.response_started = True
        s.status = head.status
        if end:
            await self._send(wire)
        else:
            self.pending = wire  # leaves with the first body bytes

    async def send_data(self, data: bytes) -> None:
        out = encode_chunk(data) if self.chunked else data
        if self.pending:
            out, self.pending = self.pending + out, b""
        await self._send(out)
        self.bytes_out += len(data)

    async def send_end(self, trailers: HeaderList) -> None:
        out = encode_last_chunk(strip_hop_by_hop(trailers)) if self.chunked else b""
        if self.pending:
            out, self.pending = self.pending + out, b""
        if out:
            await self._send(out)

    async def send_error(self, exc: HttpError) -> None:
        self.state.close_after = True
        self.state.status = exc.status
        self.started = True
        await self._send(error_response_h1(exc.status, close=True))

    async def abort(self, exc: HttpError) -> None:
        """The response cannot complete: the connection closes without a terminator."""
        self.state.close_after = True

    async def _send(self, data: bytes) -> None:
        with trio.move_on_after(self.idle_s) as scope:
            try:
                await self.client.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise ClientGone("client write failed", kind="client_write") from None
        if scope.cancelled_caught:
            raise ClientGone("client stopped reading", kind="client_write")


GeneralExchange = Callable[
    [trio.abc.Stream, MessageReader, str, RequestHead, ExchangeState], Awaitable[RequestRecord]
]


def general_exchange(ctx: ProxyContext) -> GeneralExchange:
    """The hook the H1 connection loop calls per request on a general-core listener."""
    limits = ctx.limits
    idle_s = limits.body_timeout_ms / 1000

    async def run(
        client: trio.abc.Stream,
        reader: MessageReader,
        client_ip: str,
        head: RequestHead,
        state: ExchangeState,
    ) -> RequestRecord:
        body = H1RequestBody(
            reader,
            client,
            state.request_framing,
            max_body_bytes=limits.max_body_bytes,
            idle_s=idle_s,
            expect_continue=state.expect_continue,
        )
        sink = H1ResponseSink(client, state, ctx)
        record = await proxy_exchange(
            ctx, head, body, sink, client_ip=client_ip, front="h1", admitted=True
        )
        state.upload_done = body.ended
        if not body.ended or record.error_kind is not None:
            state.close_after = True  # unread request bytes, or an error: nothing follows
        return record

    return run
