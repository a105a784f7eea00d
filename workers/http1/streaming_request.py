"""The two-task exchange shape: a request whose body is still arriving from the client.

Owns: the head sent alone, the 100 Continue answer, the upload task (client body → upstream,
each read bounded by the body idle timeout, capped by max_body_bytes) running beside the
response relay, arming the response-head deadline only once the upload finished (or the
backend stopped taking it), and stopping the upload when the response completes first. A
backend that stops reading (closes or resets while the body streams) ends the upload, not
the exchange: it may have answered early (401, 413), and that answer is the client's
(issue 17 item 5). Otherwise the first failure of either task wins.
Must never parse bytes itself (``message_reader`` does) or retry (``upstream`` does).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from gateway.http.errors import BadGateway, BodyTooLarge, HttpError
from gateway.http.framing import BodyKind
from gateway.http.h1_wire import encode_chunk, encode_last_chunk
from gateway.http.hop_by_hop import strip_hop_by_hop
from gateway.http.responses import CONTINUE_100
from workers.http1.exchange_steps import (
    CLIENT_BODY_IDLE,
    CLIENT_CONTINUE,
    RESPONSE_HEAD,
    UP_BODY_WRITE,
    UP_HEAD_WRITE,
    ClientGone,
    StepTimer,
)
from workers.http1.message_reader import DATA, END, EOF_EVENT, TRAILERS, MessageReader
from workers.http1.pool import UpstreamConn

if TYPE_CHECKING:
    from workers.http1.exchange import Exchange


async def run_streaming(
    ex: Exchange, conn: UpstreamConn, up_reader: MessageReader, request_bytes: bytes
) -> None:
    """Send the head, then upload the body and relay the response concurrently."""
    s = ex.s
    await _send_alone(ex, conn.stream, request_bytes, UP_HEAD_WRITE)
    # No head deadline until the upload finishes (the total timeout covers a slow client).
    ex.relay_timer = relay = StepTimer(ex.total_at, RESPONSE_HEAD)
    try:
        async with trio.open_nursery() as nursery:
            if s.expect_continue:
                await _send_alone(ex, ex.client, CONTINUE_100, CLIENT_CONTINUE)
            upload = StepTimer(ex.total_at, CLIENT_BODY_IDLE)
            nursery.start_soon(_guard, ex, nursery.cancel_scope, upload, _upload, ex, conn)
            await _guard(ex, nursery.cancel_scope, relay, ex.relay_response, conn, up_reader)
            if not s.upload_done:
                nursery.cancel_scope.cancel()  # response complete: the upload stops here
    finally:
        ex.relay_timer = None
    if s.failure is not None:
        raise s.failure


async def _send_alone(ex: Exchange, stream: trio.abc.Stream, data: bytes, step: int) -> None:
    timer = StepTimer(ex.total_at, step, ex.body_timeout_s)
    with timer.scope:
        await ex.send(stream, data, timer, step, armed=True)
    if timer.scope.cancelled_caught:
        raise ex.lapse(step)


async def _guard(
    ex: Exchange,
    scope: trio.CancelScope,
    timer: StepTimer,
    fn: Callable[..., Awaitable[None]],
    *args: object,
) -> None:
    """Run ``fn`` under ``timer``; its first failure is the exchange's and stops the other."""
    try:
        with timer.scope:
            await fn(*args, timer)
        if timer.scope.cancelled_caught:
            raise ex.lapse(timer.step)
    except HttpError as exc:
        if ex.s.failure is None:
            ex.s.failure = exc
        scope.cancel()


def _upload_finished(ex: Exchange, *, done: bool = True) -> None:
    """The upload ended (``done``: all of it went up): the response head's deadline starts."""
    ex.s.upload_done = done
    relay = ex.relay_timer
    if relay is not None and relay.step == RESPONSE_HEAD:
        relay.arm(ex.head_timeout_s, RESPONSE_HEAD)


async def _send_up(ex: Exchange, conn: UpstreamConn, data: bytes, timer: StepTimer) -> bool:
    """Send body bytes up; False when the backend stopped taking them (closed or reset).

    Not a failure by itself: the response relay still reads what the backend said. An
    answer is relayed (the connection then closes, the body unread); none is a 502 there.
    """
    try:
        await ex.send(conn.stream, data, timer, UP_BODY_WRITE)
    except HttpError as exc:
        if exc.kind != "upstream_write":
            raise
        _upload_finished(ex, done=False)
        return False
    return True


async def _upload(ex: Exchange, conn: UpstreamConn, timer: StepTimer) -> None:
    s = ex.s
    chunked = s.request_framing.kind is BodyKind.CHUNKED
    reader = ex.client_reader
    while True:
        timer.arm(ex.body_timeout_s, CLIENT_BODY_IDLE)
        tag, payload = await reader.next_event()
        if tag == DATA:
            assert isinstance(payload, bytes)
            s.bytes_in += len(payload)
            if s.bytes_in > ex.limits.max_body_bytes:
                raise BodyTooLarge("request body over the cap")
            out = encode_chunk(payload) if chunked else payload
            if not await _send_up(ex, conn, out, timer):
                return
            s.body_sent = True
        elif tag == TRAILERS:
            assert isinstance(payload, list)
            s.request_trailers = strip_hop_by_hop(payload)
        elif tag == END:
            if chunked:
                last = encode_last_chunk(s.request_trailers)
                if not await _send_up(ex, conn, last, timer):
                    return
            _upload_finished(ex)
            return
        elif tag == EOF_EVENT:
            raise ClientGone("client closed during request body")
        else:
            raise BadGateway(f"unexpected client event {tag}", kind="internal")
