"""The one-task exchange shape: a request whose body (if any) is already parsed.

Owns: sending head and whole body in one write (re-framed for the next hop, capped by
max_body_bytes), then relaying the response in the same task under one moving deadline.
Must never wait on the client for body bytes (``streaming_request`` does) or parse bytes
itself (``message_reader`` does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from gateway.http.errors import BadGateway, BodyTooLarge
from gateway.http.framing import BodyKind
from gateway.http.h1_wire import encode_chunk, encode_last_chunk
from gateway.http.hop_by_hop import strip_hop_by_hop
from workers.http1.dispatch import trap
from workers.http1.exchange_steps import RESPONSE_HEAD, UP_HEAD_WRITE, StepTimer
from workers.http1.message_reader import DATA, END, TRAILERS, MessageReader
from workers.http1.pool import UpstreamConn
from workers.http1.socket_io import send_now, send_rest
from workers.readiness import DRIVING, RESIDENT, TO_TRIO

if TYPE_CHECKING:
    from workers.http1.exchange import Exchange


async def run_buffered(
    ex: Exchange, conn: UpstreamConn, up_reader: MessageReader, request_bytes: bytes
) -> None:
    """Send the whole request, then relay the response under the connection's LazyDeadline.

    The request usually goes out in one non-waiting write; the rest of the exchange enters
    no cancel scope (the connection's watcher enforces the deadline).
    """
    s = ex.s
    if s.request_framing.kind is not BodyKind.NONE:
        request_bytes = _with_buffered_body(ex, request_bytes)
    stream = conn.stream
    try:
        sent = send_now(stream, request_bytes)
        if sent < len(request_bytes):
            await _send_rest_in_time(ex, stream, request_bytes, sent)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        raise ex.lapse(UP_HEAD_WRITE) from None
    if s.bytes_in:
        s.body_sent = True
    s.upload_done = True
    timer = ex.deadline
    timer.total_at = ex.total_at
    timer.arm(ex.head_timeout_s, RESPONSE_HEAD)
    up_reader.wait_first = True
    await ex.relay_response(conn, up_reader, timer)


async def _send_rest_in_time(ex: Exchange, stream: trio.abc.Stream, data: bytes, sent: int) -> None:
    """The rest of a request the kernel did not take at once, under a scope of its own (rare):
    a lapse here must surface as an error ``upstream`` can retry (a stale pooled
    connection), not as the connection's lapse."""
    if DRIVING.mode == RESIDENT:
        await trap(TO_TRIO)  # a cancel scope: trio's
    timer = StepTimer(ex.total_at, UP_HEAD_WRITE, ex.body_timeout_s)
    with timer.scope:
        await send_rest(stream, data, sent)
    if timer.scope.cancelled_caught:
        raise ex.lapse(timer.step)


def _with_buffered_body(ex: Exchange, request_bytes: bytes) -> bytes:
    """Head + the whole (already parsed) body in one write, re-framed for the next hop."""
    s = ex.s
    chunked = s.request_framing.kind is BodyKind.CHUNKED
    max_body_bytes = ex.limits.max_body_bytes
    parts = [request_bytes]
    events = ex.client_reader.events
    while True:
        tag, payload = events.popleft()
        if tag == DATA:
            assert isinstance(payload, bytes)
            s.bytes_in += len(payload)
            if s.bytes_in > max_body_bytes:
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
