"""Choosing, connecting to and retrying upstream HTTP/1.1 backends for one request.

Owns: the total-timeout bound on getting a connection (the exchange bounds the rest), the
retry rule (connect failures: always, nothing was sent; a reused connection found
dead: only idempotent requests without a body; either only while the listener's retry
budget, ``gateway.http.retry_budget``, admits it), passive-health reports, and returning a
connection to the pool only after a clean exchange. Must never parse or frame bytes.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from gateway.http.errors import GatewayTimeout, HttpError, NoBackend
from gateway.http.framing import BodyKind
from gateway.http.model import RequestHead
from gateway.http.retry_budget import RetryBudget
from workers.http1.backend import Backend, ConnectFailed, ConnectTimedOut
from workers.http1.context import H1Context
from workers.http1.dispatch import trap
from workers.http1.exchange import Exchange, StaleConnection
from workers.http1.exchange_steps import lapse_error
from workers.readiness import DRIVING, HANDED, RESIDENT, TO_DISPATCHER, TO_TRIO

IDEMPOTENT_METHODS = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"))
# Exchange failures that say nothing about the backend's health ("client*" kinds neither). The
# total timeout is the request's budget running out: reported "aborted", as when it cancels.
_NOT_THE_BACKENDS = frozenset(("body_too_large", "body_timeout", "total_timeout"))


def _outcome_of(exc: HttpError, default: tuple[bool, str]) -> tuple[bool, str]:
    """What a failed exchange says about the backend: nothing when the client is at fault (a
    4xx: its body malformed, too large or too slow, an endless trailer), so a client cannot
    get healthy backends ejected."""
    if exc.status < 500 or exc.kind.startswith("client") or exc.kind in _NOT_THE_BACKENDS:
        return default
    return (False, exc.kind)


# What one attempt asks of the retry loop in ``forward``.
_DONE = 0  # the exchange ran (whatever its status): answer with it
_RETRY = 1  # nothing reached a backend (connect failed): next pick
_RETRY_FRESH = 2  # a reused connection was found dead: next pick on a new connection


async def forward(
    ctx: H1Context,
    exchange: Exchange,
    head: RequestHead,
    request_bytes_for: Callable[[Backend], bytes],
    client: str,
) -> Backend:
    """Run ``exchange`` against a backend, retrying only when it is safe; returns the backend."""
    max_attempts = max(1, ctx.limits.pool.max_attempts)
    replayable = (
        head.method in IDEMPOTENT_METHODS and exchange.s.request_framing.kind is BodyKind.NONE
    )
    fresh = False
    attempt = 0
    tried: list[Backend] = []
    budget = ctx.retry_budget()
    budget.request_started()
    holding = False  # this request holds a retry slot of the budget
    try:
        while True:
            attempt += 1
            backend = ctx.pick_backend(head, client, tried)
            if backend is None:
                raise NoBackend("no backend available")
            tried.append(backend)
            step = await _attempt(
                ctx,
                exchange,
                backend,
                request_bytes_for,
                fresh=fresh,
                may_retry=attempt < max_attempts,
                replayable=replayable,
                budget=budget,
                holding=holding,
            )
            if step == _DONE:
                return backend
            holding = True  # a retry step was admitted by the budget
            if step == _RETRY_FRESH:
                fresh = True
    finally:
        budget.request_finished(holding)


async def _attempt(
    ctx: H1Context,
    exchange: Exchange,
    backend: Backend,
    request_bytes_for: Callable[[Backend], bytes],
    *,
    fresh: bool,
    may_retry: bool,
    replayable: bool,
    budget: RetryBudget,
    holding: bool,
) -> int:
    """One backend: connection, exchange, pool return, and exactly one passive-health report
    (so load counters stay balanced); outcomes that say nothing about the backend are
    reported as "aborted".

    Compiled by mypyc, so nothing here awaits inside an ``except`` or ``finally`` block: a
    compiled coroutine that yields there leaves its exception in the thread's exception
    state for other tasks to pick up (seen as a lapse's Cancelled escaping another
    connection). The exchange's failure is held, the connection returned, then re-raised.
    """
    pool = ctx.upstream_pool()
    now = exchange.deadline.now  # the trio clock's bound method: one call, not three
    exchange.s.backend_id = backend.id
    started_at = now()
    outcome: tuple[bool, str] = (True, "aborted")
    try:
        # A streamed upload holds its connection as long as the client takes: the pool gives
        # it a slot from the tunnel budget, so uploads cannot starve ordinary requests.
        tunnel = exchange.streams_upload()
        conn = None if fresh else pool.take_idle(backend, tunnel)
        if conn is None:
            if DRIVING.mode == RESIDENT:
                await trap(TO_TRIO)  # a dial and cancel scopes: trio's
            try:
                with trio.CancelScope(deadline=exchange.total_at) as total:
                    conn = await pool.acquire(backend, fresh=fresh, tunnel=tunnel)
            except (ConnectFailed, ConnectTimedOut) as exc:
                outcome = (False, exc.kind)
                if may_retry:
                    if budget.admit(holding):
                        return _RETRY
                    ctx.on_retry_denied()
                raise
            if total.cancelled_caught or conn is None:
                raise GatewayTimeout("total request time exceeded", kind="total_timeout")
            if DRIVING.mode == HANDED:
                await trap(TO_DISPATCHER)  # the exchange itself runs on the dispatcher
        reusable = False
        failure: BaseException | None = None
        try:
            await exchange.run(conn, request_bytes_for(backend))
            reusable = exchange.s.upstream_reusable
        except BaseException as exc:  # held for the pool return, then re-raised
            failure = exc
        if not pool.keep(conn, reusable=reusable) and not pool.discard_now(conn):
            if DRIVING.mode == RESIDENT:
                await trap(TO_TRIO)
            with trio.CancelScope(shield=True):
                await pool.discard(conn)
        if failure is None:
            ok = exchange.s.status < 500
            outcome = (ok, "ok" if ok else "status_5xx")
            return _DONE
        if isinstance(failure, StaleConnection):
            if replayable and may_retry and not exchange.s.response_started:
                if budget.admit(holding):
                    outcome = (True, "retry_stale")
                    return _RETRY_FRESH
                ctx.on_retry_denied()
            outcome = (False, "stale_connection")
        elif isinstance(failure, HttpError):
            outcome = _outcome_of(failure, outcome)
        elif isinstance(failure, trio.Cancelled) and exchange.deadline.lapsed:
            # The connection's watcher ended the exchange: report what the lapse means.
            outcome = _outcome_of(
                lapse_error(exchange.deadline.step, exchange.conn_reused), outcome
            )
        raise failure
    finally:
        ctx.on_backend_result(backend, outcome[0], outcome[1], now() - started_at)
