"""ClientConnection: one client connection of an HTTP/1.1 listener, from accept to close
(``serve.serve_h1_connection`` runs it).

Owns: the keep-alive loop (requests processed strictly one after another, so pipelined
requests are safe), the header timeout and idle close, admission and smuggling checks via
``gateway.http`` (behind TLS with several certificates also the 421 misdirected check), the
per-request access record, the keep-alive cap, drain, and turning every error into a small
response or a close. On plain TCP it runs as a coroutine of the run's dispatcher
(``dispatch.py``): every path into trio code (a cancel scope, a nursery, a dial, the
general core, a WebSocket tunnel, an error answer) first awaits ``trap(TO_TRIO)``, and the
keep-alive loop's top goes back (``TO_DISPATCHER``). Must never log per request (only ``on_request_done``)
and never let client or backend bytes raise out of the handler.
"""

from __future__ import annotations

import math

import trio

from gateway.http.admission import admit_request
from gateway.http.errors import (
    BadRequest,
    BodyTooLarge,
    ExpectationFailed,
    HttpError,
    MisdirectedRequest,
    NotImplementedMethod,
    RequestTimeout,
)
from gateway.http.framing import BodyKind, request_body_framing
from gateway.http.grpc_status import is_grpc
from gateway.http.h1_relay_heads import upstream_request_head
from gateway.http.h1_wire import client_keeps_alive
from gateway.http.lingering_close import should_linger
from gateway.http.misdirected import is_misdirected
from gateway.http.model import RequestHead, comma_tokens
from gateway.http.responses import error_response_h1
from workers.http1.backend import Backend
from workers.http1.context import H1Context, RequestRecord
from workers.http1.deadline_watch import LazyDeadline
from workers.http1.dispatch import trap
from workers.http1.exchange import ClientGone, Exchange, ExchangeState
from workers.http1.exchange_steps import (
    KEEPALIVE_IDLE,
    REQUEST_HEAD,
    UNWATCHED,
    clock_now,
    lapse_error,
)
from workers.http1.message_reader import END, EOF_EVENT, HEAD, UPGRADE, MessageReader, ParsedHead
from workers.http1.socket_io import send_all
from workers.http1.upstream import forward
from workers.http1.websocket import is_websocket_request, proxy_websocket
from workers.readiness import DRIVING, HANDED, RESIDENT, TO_DISPATCHER, TO_TRIO


def peer_of(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    if sock is None:
        return "unknown"
    try:
        peer = sock.getpeername()
    except OSError:
        return "unknown"
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


class ClientConnection:
    def __init__(
        self, stream: trio.abc.Stream, ctx: H1Context, client: str, certificate: int = 0
    ) -> None:
        self.stream = stream
        self.ctx = ctx
        self.client = client
        self.limits = ctx.limits
        self.client_ip = client.encode()
        # Whether this peer's X-Forwarded-For / Forwarded / X-Real-IP are believed: the
        # peer is fixed, so the policy is asked once per connection, never per request.
        self.keep_inbound = ctx.limits.forwarding.keeps_inbound(client)
        self.reader = MessageReader(stream, ctx.limits, is_request=True)
        self.header_timeout_s = ctx.limits.header_timeout_ms / 1000
        self.total_timeout_s = ctx.limits.total_timeout_ms / 1000
        self.served = 0
        self.now = clock_now()
        # Every deadline of the connection (keep-alive idle, request head, the buffered
        # exchange's steps) is one LazyDeadline, enforced by the listener's DeadlineWatch
        # (one task for all connections), which cancels ``life`` on a lapse: a request costs
        # no cancel scope, and rarely a heap push.
        self.life = trio.CancelScope()
        self.deadline = LazyDeadline(self.now, ctx.deadline_watch(), self.life.cancel)
        self.exchange = Exchange(None, stream, self.reader, ctx.limits, self.deadline, ctx.draining)
        # The request in progress, for the answer to a lapse (answer_lapse).
        self.head_started_at = 0.0
        self.current: tuple[RequestHead, ExchangeState | None] | None = None
        # TLS with several certificates only (else None: no per-request cost).
        self.server_names = ctx.server_names
        self.certificate = certificate
        self.abort = False  # close with a reset: a response already sent is known truncated

    def lingers(self) -> bool:
        """Closing now could reset a response in flight: the client may still be sending."""
        r = self.reader
        return should_linger(
            unread_input=r.in_message or bool(r.events) or r.refused_input,
            peer_closed=r.eof,
            upgraded=r.upgraded,
        )

    async def answer_lapse(self) -> None:
        """The connection's deadline lapsed: 408 for a slow head, the exchange step's error
        for a request in progress, a plain close for an idle keep-alive."""
        step = self.deadline.step
        if step == REQUEST_HEAD:
            exc: HttpError = RequestTimeout("request head too slow", kind="header_timeout")
            await self._fail(exc, None, self.head_started_at)
        elif step != KEEPALIVE_IDLE and self.current is not None:
            head, state = self.current
            exc = lapse_error(step, self.exchange.conn_reused)
            await self._fail(exc, head, self.head_started_at, state)

    async def serve(self) -> None:
        while True:
            self.head_started_at = self.now()
            self.current = None
            failure: HttpError | None = None
            try:
                head = await self._read_head()
            except HttpError as exc:
                failure = exc  # answered outside the handler: no await inside except
            if failure is not None:
                await self._fail(failure, None, self.head_started_at)
                return
            if head is None:
                return
            self.served += 1
            keep_alive = await self._handle(head, self.head_started_at)
            head = None  # an idle connection holds no request's head (issue 18)
            if not keep_alive:
                return

    async def _read_head(self) -> ParsedHead | None:
        """The next request head; None when the client left or we close an idle connection."""
        if DRIVING.mode == HANDED:
            await trap(TO_DISPATCHER)  # back from a stretch in trio (see dispatch.py)
        reader = self.reader
        d = self.deadline
        head_at = self.head_started_at + self.header_timeout_s
        if reader.idle:
            # Once drain began, the watch also pulls in the deadline of connections already
            # idle (DeadlineWatch.close_idle_by).
            idle_at = min(head_at, self.ctx.idle_close_at)
            if idle_at <= self.head_started_at:
                return None
            d.set(idle_at, KEEPALIVE_IDLE)
            # A request already waiting is read without a checkpoint: every request this
            # loop serves either ends the connection or parks on its upstream read, which is
            # where cancellation, deadlines and the other tasks get their turn.
            await reader.fill(checkpoint=False)
            if d.lapsed:
                return None  # the idle deadline passed as the bytes came: close as idle
            # The request's time starts with its first bytes, not with the keep-alive wait
            # before them (as nginx's $request_time); the head deadline keeps its start.
            self.head_started_at = self.now()
        d.set(head_at, REQUEST_HEAD)
        tag, payload = await reader.next_event()
        if d.lapsed:
            return None  # the head deadline passed as the head completed: 408 on the way out
        d.set(math.inf, UNWATCHED)
        if tag == HEAD:
            assert isinstance(payload, ParsedHead)
            return payload
        if tag == EOF_EVENT:
            return None
        raise BadRequest(f"unexpected event {tag} before head", kind="parse_error")

    def _request(self, parsed: ParsedHead) -> RequestHead:
        return RequestHead(
            method=parsed.method,
            scheme=self.ctx.scheme,
            authority=b"",
            path=parsed.target,
            headers=parsed.headers,
            http_version=parsed.http_version,
        )

    def _should_close(self, head: RequestHead) -> bool:
        cap = self.limits.max_keepalive_requests
        return (
            not client_keeps_alive(head.http_version, head.headers)
            or (cap > 0 and self.served >= cap)
            or self.ctx.draining.is_set()
        )

    def _upstream_request_bytes(
        self, head: RequestHead, state: ExchangeState, backend: Backend
    ) -> bytes:
        return upstream_request_head(
            head.method,
            head.path,
            head.authority,
            head.headers,
            state.request_framing,
            peer_ip=self.client_ip,
            proto=self.ctx.scheme,
            default_host=backend.authority,
            rng=self.ctx.rng,
            keep_inbound=self.keep_inbound,
        )

    async def _handle(self, parsed: ParsedHead, started_at: float) -> bool:
        """Proxy one request; True when the connection may carry another."""
        head = self._request(parsed)
        state: ExchangeState | None = None
        failure: HttpError | None = None
        self.current = (head, None)
        try:
            if head.method == b"CONNECT":
                raise NotImplementedMethod("CONNECT is not proxied")
            admit_request(head, self.limits)
            names = self.server_names
            if names is not None and is_misdirected(names, self.certificate, head.authority):
                raise MisdirectedRequest("authority served by another certificate")
            framing = request_body_framing(
                head.headers, http_version=head.http_version, strict_te=self.limits.strict_te
            )
            if framing.kind is BodyKind.LENGTH and framing.length > self.limits.max_body_bytes:
                raise BodyTooLarge("declared content-length over the cap")
            expect = comma_tokens(head.headers, b"expect")
            if expect and expect != [b"100-continue"]:
                raise ExpectationFailed("unsupported expectation")
            if parsed.upgrade:
                if (
                    self.ctx.limits.websocket.enabled
                    and is_websocket_request(head)
                    and framing.kind is BodyKind.NONE
                ):
                    leftover = await self._consume_upgrade_marker(websocket=True)
                    return await self._websocket(head, leftover, started_at)
                await self._decline_upgrade(framing.kind is not BodyKind.NONE)
            elif framing.kind is BodyKind.NONE:
                await self._consume_end()
            state = ExchangeState(
                method=head.method,
                client_version=head.http_version,
                request_framing=framing,
                expect_continue=bool(expect) and framing.kind is not BodyKind.NONE,
                close_after=self._should_close(head),
            )
            self.current = (head, state)
            general = self.ctx.general
            if general is None and is_grpc(head.headers):
                general = self.ctx.grpc_general
            if general is not None:
                if DRIVING.mode == RESIDENT:
                    await trap(TO_TRIO)
                record = await general(self.stream, self.reader, self.client, head, state)
                self.ctx.on_request_done(record)
                kind = record.error_kind
                if kind is not None and state.client_until_close and not kind.startswith("client"):
                    # A body the client reads until our close cannot say it was cut short:
                    # a reset does (as ``_fail`` decides on the fast path).
                    self.abort = True
                return not state.close_after
            exchange = self.exchange
            exchange.s = state

            def build(backend: Backend) -> bytes:
                return self._upstream_request_bytes(head, state, backend)

            # The total timeout is enforced inside (the exchange's step deadlines and the
            # connect wait are capped by it), so no scope of its own is entered per request.
            exchange.total_at = self.now() + self.total_timeout_s
            await forward(self.ctx, exchange, head, build, self.client)
            self.deadline.set(math.inf, UNWATCHED)
        except HttpError as exc:
            failure = exc  # answered outside the handler: no await inside except
        if failure is not None:
            await self._fail(failure, head, started_at, state)
            return False
        assert state is not None
        self._record(head, started_at, state, state.backend_id, None)
        return not state.close_after

    async def _consume_end(self) -> None:
        """A body-less request's END event follows its head in the same feed."""
        tag, _ = await self.reader.next_event()
        if tag != END:
            raise BadRequest(f"unexpected {tag} after a body-less head", kind="parse_error")

    async def _consume_upgrade_marker(self, *, websocket: bool) -> bytes:
        """Pop END and the UPGRADE event queued after an upgrade head; returns leftover bytes."""
        leftover = b""
        while True:
            tag, payload = await self.reader.next_event()
            if tag == UPGRADE:
                assert isinstance(payload, bytes)
                leftover = payload
                break
            if tag != END:
                raise BadRequest("unexpected event after upgrade head", kind="parse_error")
        if not websocket:
            self.reader.resume_after_upgrade(leftover)
            return b""
        return leftover

    async def _decline_upgrade(self, has_body: bool) -> None:
        """Serve an h2c or other upgrade offer as plain HTTP/1.1 (RFC 9110 §7.8 lets us ignore it)."""
        if has_body:
            # llhttp skipped the body of an upgrade request: forwarding it would desync us.
            raise BadRequest("upgrade request with a body", kind="smuggling")
        await self._consume_upgrade_marker(websocket=False)

    async def _websocket(self, head: RequestHead, leftover: bytes, started_at: float) -> bool:
        if DRIVING.mode == RESIDENT:
            await trap(TO_TRIO)  # a tunnel: tasks and cancel scopes
        result = await proxy_websocket(self.ctx, self.stream, head, leftover, self.client)
        self.ctx.on_request_done(
            RequestRecord(
                listener=self.ctx.listener,
                method=head.method.decode("latin-1"),
                path=head.path.decode("latin-1"),
                status=result.status,
                bytes_in=result.bytes_in,
                bytes_out=result.bytes_out,
                duration_s=self.now() - started_at,
                backend_id=result.backend_id,
                client=self.client,
                error_kind=result.error_kind,
            )
        )
        return False

    async def _fail(
        self,
        exc: HttpError,
        head: RequestHead | None,
        started_at: float,
        state: ExchangeState | None = None,
    ) -> None:
        """Answer with a small error response (unless one already began) and record it."""
        self.deadline.set(math.inf, UNWATCHED)  # the answer has its own bound below
        status = 0
        if (state is None or not state.response_started) and not isinstance(exc, ClientGone):
            status = exc.status
            if DRIVING.mode == RESIDENT:
                await trap(TO_TRIO)  # the bound is a cancel scope
            with trio.move_on_after(1.0):
                try:
                    await send_all(self.stream, error_response_h1(status, close=True))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    status = 0
        elif state is not None:
            status = state.status
            # A body the client reads until our close cannot say it was cut short: a reset
            # does (a FIN would dress the truncated body up as complete).
            self.abort = state.client_until_close and not isinstance(exc, ClientGone)
        if head is not None or status:
            backend_id = state.backend_id if state else None
            self._record(head, started_at, state, backend_id, exc.kind, status=status)

    def _record(
        self,
        head: RequestHead | None,
        started_at: float,
        state: ExchangeState | None,
        backend_id: str | None,
        error_kind: str | None,
        *,
        status: int | None = None,
    ) -> None:
        self.ctx.on_request_done(
            RequestRecord(
                listener=self.ctx.listener,
                method=head.method.decode("latin-1") if head else "",
                path=head.path.decode("latin-1") if head else "",
                status=status if status is not None else (state.status if state else 0),
                bytes_in=state.bytes_in if state else 0,
                bytes_out=state.bytes_out if state else 0,
                duration_s=self.now() - started_at,
                backend_id=backend_id,
                client=self.client,
                error_kind=error_kind,
            )
        )
