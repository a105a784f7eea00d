"""The proxy core: one function per exchange, the same for every front and back protocol.

Owns the steps admit → rules → route → pick → retry → relay for one request: the neutral
forwarding rules applied once (gateway/http/request_rules), the backend choice through the
listener's balancer and health, the retry rule (gateway/http/retry_rule), the total
deadline, the relay of the response head, body and trailers to the front's sink, exactly
one passive-health report per attempt, and the access record. A failure ends this one
exchange: the sink answers it (an error response before the head, an abort after: on H2/H3
that is one stream's reset, never the connection). Must never touch a socket or a frame:
the adapters do.
"""

from __future__ import annotations

from typing import cast

import trio

from gateway.http.admission import admit_request
from gateway.http.errors import BadGateway, GatewayTimeout, HttpError, NoBackend
from gateway.http.model import RequestHead
from gateway.http.request_rules import forward_request, forward_response
from gateway.http.retry_budget import RetryBudget
from gateway.http.retry_rule import (
    MAYBE_PROCESSED,
    NOT_PROCESSED,
    PROCESSED,
    failure_outcome,
    may_retry,
    status_outcome,
)
from workers.http.back import BackAdapter, UpstreamLost, UpstreamRefused, UpstreamResponse
from workers.http.body import BodySource
from workers.http.context import ProxyContext
from workers.http.sink import ResponseSink
from workers.http1.backend import Backend, ConnectFailed, ConnectTimedOut
from workers.http1.context import RequestRecord
from workers.http1.exchange_steps import ClientGone

_RETRY = object()


class Exchange:
    """One request's journey; the values the access record and the retry rule read."""

    __slots__ = (
        "backend",
        "body",
        "client_ip",
        "ctx",
        "front",
        "head",
        "holding_retry",
        "sink",
        "status",
        "tried",
    )

    def __init__(
        self,
        ctx: ProxyContext,
        head: RequestHead,
        body: BodySource,
        sink: ResponseSink,
        client_ip: str,
        front: str,
    ) -> None:
        self.ctx = ctx
        self.head = head
        self.body = body
        self.sink = sink
        self.client_ip = client_ip
        self.front = front
        self.backend: Backend | None = None
        self.tried: list[Backend] = []
        self.status = 0
        self.holding_retry = False  # a slot of the listener's retry budget


async def proxy_exchange(
    ctx: ProxyContext,
    head: RequestHead,
    body: BodySource,
    sink: ResponseSink,
    *,
    client_ip: str,
    front: str,
    admitted: bool = False,
) -> RequestRecord:
    """Serve one request to the end; never raises for peer or backend behaviour."""
    now = trio.current_time
    started_at = now()
    ex = Exchange(ctx, head, body, sink, client_ip, front)
    failure: HttpError | None = None
    with trio.CancelScope(deadline=started_at + ctx.limits.total_timeout_ms / 1000) as total:
        try:
            if not admitted:
                admit_request(head, ctx.limits)
            await _forward(ex)
        except HttpError as exc:
            failure = exc
    if total.cancelled_caught and failure is None:
        failure = GatewayTimeout("total request time exceeded", kind="total_timeout")
    if failure is not None:
        await _answer(ex, failure)
    return _record(ex, started_at, now(), failure)


async def _answer(ex: Exchange, failure: HttpError) -> None:
    sink = ex.sink
    with trio.move_on_after(1.0):
        if isinstance(failure, ClientGone):
            await sink.abort(failure)
        elif not sink.started:
            ex.status = failure.status
            await sink.send_error(failure)
        else:
            await sink.abort(failure)


def _record(
    ex: Exchange, started_at: float, ended_at: float, failure: HttpError | None
) -> RequestRecord:
    head = ex.head
    return RequestRecord(
        listener=ex.ctx.listener,
        method=head.method.decode("latin-1"),
        path=head.path.decode("latin-1"),
        status=ex.status,
        bytes_in=ex.body.received_bytes,
        bytes_out=ex.sink.bytes_out,
        duration_s=ended_at - started_at,
        backend_id=ex.backend.id if ex.backend is not None else None,
        client=ex.client_ip,
        error_kind=failure.kind if failure is not None else None,
        front=ex.front,
        back=ex.ctx.back_for[ex.backend.id].protocol if ex.backend is not None else "",
    )


async def _forward(ex: Exchange) -> None:
    ctx = ex.ctx
    budget = ctx.budget()
    budget.request_started()
    try:
        await _pick_and_retry(ex, budget)
    finally:
        budget.request_finished(ex.holding_retry)


async def _pick_and_retry(ex: Exchange, budget: RetryBudget) -> None:
    """Attempts until one answers or no retry is allowed."""
    ctx = ex.ctx
    ctx.route(ex.head)  # one backend set per listener until L7 routing fills this step
    max_attempts = max(1, ctx.limits.pool.max_attempts)
    keep_inbound = ctx.limits.forwarding.keeps_inbound(ex.client_ip)
    attempt = 0
    while True:
        attempt += 1
        backend = ctx.pick_backend(ex.head, ex.client_ip, ex.tried)
        if backend is None:
            raise NoBackend("no backend available")
        ex.tried.append(backend)
        ex.backend = backend
        adapter = ctx.back_for[backend.id]
        forwarded = forward_request(
            ex.head,
            peer_ip=ex.client_ip.encode(),
            proto=ex.head.scheme or b"http",
            next_hop=adapter.protocol,
            default_authority=backend.authority,
            rng=ctx.rng,
            keep_inbound=keep_inbound,
        )
        how, failure = await _attempt(ex, backend, adapter, forwarded)
        if failure is None:
            return
        if may_retry(
            how,
            method=ex.head.method,
            body_started=ex.body.started,
            body_empty=ex.body.length == 0,
            response_started=ex.sink.started,
            attempt=attempt,
            max_attempts=max_attempts,
        ):
            if budget.admit(ex.holding_retry):
                ex.holding_retry = True  # held until the request ends
                continue
            ctx.on_retry_denied()
        raise failure


def _how(exc: HttpError) -> int:
    if isinstance(exc, (UpstreamRefused, ConnectFailed, ConnectTimedOut)):
        return NOT_PROCESSED
    if isinstance(exc, UpstreamLost):
        return MAYBE_PROCESSED
    return PROCESSED


async def _attempt(
    ex: Exchange, backend: Backend, adapter: BackAdapter, forwarded: RequestHead
) -> tuple[int, HttpError | None]:
    """One backend: exchange and relay, exactly one passive-health report."""
    ctx = ex.ctx
    started_at = trio.current_time()
    outcome = (True, "aborted")
    failure: HttpError | None = None
    try:
        if ex.body.length == 0:
            failure = await _exchange_without_upload(ex, backend, adapter, forwarded)
        else:
            failure = await _exchange_with_upload(ex, backend, adapter, forwarded)
        if failure is None:
            outcome = status_outcome(ex.status)
            return PROCESSED, None
        outcome = failure_outcome(failure.kind, failure.status)
        return _how(failure), failure
    finally:
        ctx.on_backend_result(backend, outcome[0], outcome[1], trio.current_time() - started_at)


class _NoUploads:
    """Stands in for the exchange's nursery when the request has no body: adapters start an
    upload task only for a body, and a bodiless exchange (most of them) skips the nursery."""

    def start_soon(self, *args: object) -> None:
        raise RuntimeError("a request without a body has no upload to run")


_NO_UPLOADS = cast(trio.Nursery, _NoUploads())


async def _exchange_without_upload(
    ex: Exchange, backend: Backend, adapter: BackAdapter, forwarded: RequestHead
) -> HttpError | None:
    try:
        response = await adapter.open_exchange(_NO_UPLOADS, backend, forwarded, ex.body)
    except HttpError as exc:
        return exc
    return await _relay(ex, response)


async def _exchange_with_upload(
    ex: Exchange, backend: Backend, adapter: BackAdapter, forwarded: RequestHead
) -> HttpError | None:
    """The upload runs beside the response in a nursery; the first failure is the answer."""
    failure: HttpError | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                response = await adapter.open_exchange(nursery, backend, forwarded, ex.body)
            except HttpError as exc:
                failure = exc
            else:
                failure = await _relay(ex, response)
            # The response is complete (or failed): an upload still running stops here.
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        failure = _upload_failure(group)
    return failure


def _upload_failure(group: BaseExceptionGroup[BaseException]) -> HttpError:
    """The upload task's typed failure; anything else (a bug, a cancellation) propagates."""
    matched, rest = group.split(HttpError)
    if rest is not None:
        raise rest
    assert matched is not None
    first: BaseException = matched
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    assert isinstance(first, HttpError)
    return first


async def _relay(ex: Exchange, response: UpstreamResponse) -> HttpError | None:
    """Head, body and trailers to the client; releases ``response`` exactly once."""
    sink = ex.sink
    body = response.body
    complete = False
    try:
        head = forward_response(response.head)
        if ex.ctx.response_headers:  # e.g. Alt-Svc on an h1s listener that announces HTTP/3
            head.headers = [*head.headers, *ex.ctx.response_headers]
        ex.status = head.status
        if body.length == 0:
            if await body.receive():
                raise BadGateway("body on a response declared empty", kind="upstream_protocol")
            await sink.send_head(head, length=response.declared_length, end=not body.trailers)
            if body.trailers:
                await sink.send_end(body.trailers)
        else:
            await sink.send_head(head, length=response.declared_length, end=False)
            while chunk := await body.receive():
                await sink.send_data(chunk)
            await sink.send_end(body.trailers)
        complete = True
        return None
    except HttpError as exc:
        return exc
    finally:
        with trio.CancelScope(shield=True):
            await response.release(complete=complete)
