"""Choosing, connecting to and retrying upstream HTTP/1.1 backends for one request.

Owns: the total-timeout bound on getting a connection (the exchange bounds the rest), the
retry rule (connect failures: always, nothing was sent; a reused connection found
dead: only idempotent requests without a body), passive-health reports, and returning a
connection to the pool only after a clean exchange. Must never parse or frame bytes.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from gateway.http.errors import GatewayTimeout, HttpError, NoBackend
from gateway.http.framing import BodyKind
from gateway.http.model import RequestHead
from workers.http1.backend import Backend, ConnectFailed, ConnectTimedOut
from workers.http1.context import H1Context
from workers.http1.exchange import Exchange, StaleConnection
from workers.http1.exchange_steps import lapse_error

IDEMPOTENT_METHODS = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"))
# Exchange failures that say nothing about the backend's health ("client*" kinds neither). The
# total timeout is the request's budget running out: reported "aborted", as when it cancels.
_NOT_THE_BACKENDS = frozenset(("body_too_large", "body_timeout", "total_timeout"))


def _outcome_of(exc: HttpError, default: tuple[bool, str]) -> tuple[bool, str]:
    """What a failed exchange says about the backend (client-side kinds say nothing)."""
    if exc.kind.startswith("client") or exc.kind in _NOT_THE_BACKENDS:
        return default
    return (False, exc.kind)


async def forward(
    ctx: H1Context,
    exchange: Exchange,
    head: RequestHead,
    request_bytes_for: Callable[[Backend], bytes],
    client: str,
) -> Backend:
    """Run ``exchange`` against a backend, retrying only when it is safe; returns the backend."""
    pool = ctx.upstream_pool()
    max_attempts = max(1, ctx.limits.pool.max_attempts)
    replayable = (
        head.method in IDEMPOTENT_METHODS and exchange.s.request_framing.kind is BodyKind.NONE
    )
    now = exchange.deadline.now  # the trio clock's bound method: one call, not three
    fresh = False
    attempt = 0
    tried: list[Backend] = []
    while True:
        attempt += 1
        backend = ctx.pick_backend(head, client, tried)
        if backend is None:
            raise NoBackend("no backend available")
        tried.append(backend)
        exchange.s.backend_id = backend.id
        started_at = now()
        # Every pick gets exactly one on_backend_result, so load counters stay balanced;
        # outcomes that say nothing about the backend are reported as "aborted".
        outcome: tuple[bool, str] = (True, "aborted")
        try:
            conn = None if fresh else pool.take_idle(backend)
            if conn is None:
                try:
                    with trio.CancelScope(deadline=exchange.total_at) as total:
                        conn = await pool.acquire(backend, fresh=fresh)
                except (ConnectFailed, ConnectTimedOut) as exc:
                    outcome = (False, exc.kind)
                    if attempt < max_attempts:
                        continue
                    raise
                if total.cancelled_caught or conn is None:
                    raise GatewayTimeout("total request time exceeded", kind="total_timeout")
            reusable = False
            try:
                await exchange.run(conn, request_bytes_for(backend))
                reusable = exchange.s.upstream_reusable
            except StaleConnection:
                if replayable and attempt < max_attempts and not exchange.s.response_started:
                    fresh = True
                    outcome = (True, "retry_stale")
                    continue
                outcome = (False, "stale_connection")
                raise
            except HttpError as exc:
                outcome = _outcome_of(exc, outcome)
                raise
            except trio.Cancelled:
                if exchange.deadline.lapsed:  # the connection's watcher ended the exchange
                    lapse = lapse_error(exchange.deadline.step, exchange.conn_reused)
                    outcome = _outcome_of(lapse, outcome)
                raise
            finally:
                if not pool.keep(conn, reusable=reusable):
                    with trio.CancelScope(shield=True):
                        await pool.discard(conn)
            ok = exchange.s.status < 500
            outcome = (ok, "ok" if ok else "status_5xx")
            return backend
        finally:
            ctx.on_backend_result(backend, outcome[0], outcome[1], now() - started_at)
