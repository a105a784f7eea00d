"""WebSocket over HTTP/2 (RFC 8441) and HTTP/3 (RFC 9220, the same extended CONNECT): one
extended CONNECT stream of the HTTP/2 or HTTP/3 front bridged to a backend, then relayed as
a WebSocket tunnel. The front's stream comes as a BodySource and a ResponseSink, so nothing
here depends on the front's version.

Owns: the backend choice and connect retries of a tunnel (as ``workers/http1/websocket``
does for the HTTP/1.1 Upgrade), the handshake with the backend — an HTTP/1.1 ``Upgrade:
websocket`` with a fresh key whose ``Sec-WebSocket-Accept`` is checked, or an extended
CONNECT to an HTTP/2 backend that announced SETTINGS_ENABLE_CONNECT_PROTOCOL (one that did
not is passed over; with no other backend the stream gets 502) — the client's 200 only
after the backend accepted, and the relay through the same ``WsTunnel`` as WebSocket over
HTTP/1.1 (idle timeout, message-size cap, client ping budget, drain close 1001 at the
deadline). Every failure
ends this one stream (a status before the 200, END_STREAM or RST_STREAM after it), never
the connection. Must never parse WebSocket payloads (``gateway/http/ws_frames`` tracks
frame boundaries) or touch the client socket (the front's writer does).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h2.exceptions
import trio

from gateway.http.admission import admit_request
from gateway.http.errors import BadGateway, GatewayTimeout, HttpError, NoBackend
from gateway.http.model import HeaderList, RequestHead, ResponseHead
from gateway.http.request_rules import forward_request
from gateway.http.ws_bridge import (
    check_upgrade_response,
    extended_connect_fields,
    new_key,
    tunnel_response_fields,
    upgrade_fields,
    websocket_head,
)
from workers.http.body import BodySource
from workers.http.context import ProxyContext
from workers.http.h1_back import H1Back, request_head_bytes
from workers.http.h2_back import H2Back
from workers.http.h2_upstream_connection import H2UpstreamConnection
from workers.http.h2_upstream_stream import H2UpstreamStream
from workers.http.sink import ResponseSink
from workers.http1.backend import Backend, ConnectFailed, ConnectTimedOut
from workers.http1.context import RequestRecord
from workers.http1.exchange_steps import ClientGone
from workers.http1.websocket import ByteStream, WsTunnel, upgrade_upstream

# A tunnel's bytes are capped per WebSocket message (the frame tracker), not as a body.
TUNNEL_BODY_CAP_BYTES = 2**62
# Ending the streams of a finished tunnel: how long to wait for room to say so.
_CLOSE_S = 1.0
# Tunnel endings that are an orderly end of the H2 stream (END_STREAM), not a reset.
_ORDERLY = frozenset(("eof", "drain", "ws_idle", "ws_message_too_big", "ws_ping_flood"))


class NoExtendedConnect(BadGateway):
    """Every backend tried speaks HTTP/2 without announcing RFC 8441 support."""

    kind = "ws_backend_no_rfc8441"


class _ClientSide:
    """The front's stream as the tunnel's client byte stream."""

    def __init__(self, body: BodySource, sink: ResponseSink) -> None:
        self.body = body
        self.sink = sink

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            return await self.body.receive()
        except HttpError as exc:
            raise trio.BrokenResourceError(exc.kind) from None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self.sink.send_data(bytes(data))
        except HttpError as exc:
            raise trio.BrokenResourceError(exc.kind) from None


class _H2UpstreamSide:
    """An upstream HTTP/2 stream as the tunnel's backend byte stream."""

    def __init__(self, conn: H2UpstreamConnection, stream: H2UpstreamStream) -> None:
        self.conn = conn
        self.stream = stream

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        stream = self.stream
        while True:
            if stream.chunks:
                return stream.take_chunk()
            if stream.remote_ended:
                return b""
            if stream.error is not None:
                raise trio.BrokenResourceError(stream.error.kind)
            await stream.wait_data()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        # The backend ended its side (after its close frame): nothing more goes to it, as to
        # a socket its peer closed (hypercorn drops its connection on DATA past its END_STREAM).
        if self.stream.remote_ended or not await self.conn.send_data(self.stream, bytes(data)):
            raise trio.BrokenResourceError("upstream stream ended")


@dataclass(slots=True)
class _Upstream:
    side: ByteStream
    fields: HeaderList  # the client's 200 carries these
    leftover: bytes  # tunnel bytes that came with the backend's answer
    close: Callable[[bool], Awaitable[None]]  # True: an orderly end


async def serve_websocket_stream(
    ctx: ProxyContext,
    connect: RequestHead,
    body: BodySource,
    sink: ResponseSink,
    *,
    client_ip: str,
    front: str = "h2",
) -> RequestRecord:
    """Bridge one extended CONNECT (``:protocol = websocket``) until the tunnel ends; never
    raises for peer or backend behaviour."""
    started_at = trio.current_time()
    head = websocket_head(connect)
    status = 0
    error_kind: str | None = None
    chosen: list[Backend] = []
    tunnel: WsTunnel | None = None
    try:
        admit_request(head, ctx.limits)
        upstream = await _open_upstream(ctx, head, client_ip, chosen)
        orderly = False
        try:
            await sink.send_head(ResponseHead(200, headers=upstream.fields), length=None, end=False)
            status = 200
            tunnel = WsTunnel(ctx, _ClientSide(body, sink), upstream.side)
            await tunnel.run(b"", upstream.leftover)
            orderly = tunnel.reason in _ORDERLY
            if tunnel.reason != "eof":
                error_kind = tunnel.reason
            with trio.move_on_after(_CLOSE_S):
                if orderly:
                    await sink.send_end([])
                else:
                    await sink.abort(BadGateway("tunnel ended", kind=tunnel.reason or ""))
        finally:
            with trio.CancelScope(shield=True):
                await upstream.close(orderly)
    except HttpError as exc:
        error_kind = exc.kind
        with trio.move_on_after(_CLOSE_S):
            if status == 0 and not isinstance(exc, ClientGone):
                status = exc.status
                await sink.send_error(exc)
            else:
                await sink.abort(exc)
    return RequestRecord(
        listener=ctx.listener,
        method="CONNECT",
        path=connect.path.decode("latin-1"),
        status=status,
        bytes_in=tunnel.bytes_up if tunnel is not None else 0,
        bytes_out=tunnel.bytes_down if tunnel is not None else 0,
        duration_s=trio.current_time() - started_at,
        backend_id=chosen[-1].id if chosen else None,
        client=client_ip,
        error_kind=error_kind,
        front=front,
        back=ctx.back_for[chosen[-1].id].protocol if chosen else "",
    )


async def _open_upstream(
    ctx: ProxyContext, head: RequestHead, client_ip: str, chosen: list[Backend]
) -> _Upstream:
    """Pick, connect and handshake; connect failures retry on another backend within the
    listener's attempts and retry budget, as for any request that reached no backend."""
    tried: list[Backend] = []
    budget = ctx.budget()  # counted while connecting only: a tunnel is no request
    budget.request_started()
    holding = False
    attempts = 0
    unsupported: NoExtendedConnect | None = None
    failed: HttpError | None = None  # the last connect failure
    keep_inbound = ctx.limits.forwarding.keeps_inbound(client_ip)
    try:
        while True:
            backend = ctx.pick_backend(head, client_ip, tried)
            if backend is None:
                # Every backend tried: the last connect failure says more than "none".
                raise failed or unsupported or NoBackend("no backend available")
            tried.append(backend)
            adapter = ctx.back_for[backend.id]
            forwarded = forward_request(
                head,
                peer_ip=client_ip.encode(),
                proto=head.scheme or b"http",
                next_hop=adapter.protocol,
                default_authority=backend.authority,
                rng=ctx.rng,
                keep_inbound=keep_inbound,
            )
            started_at = trio.current_time()
            outcome = (True, "aborted")
            try:
                if isinstance(adapter, H1Back):
                    upstream = await _open_h1(ctx, adapter, backend, forwarded)
                elif isinstance(adapter, H2Back):
                    upstream = await _open_h2(ctx, adapter, backend, forwarded)
                else:
                    raise NoExtendedConnect(f"{adapter.protocol} backends carry no WebSocket")
                outcome = (True, "ok")
                chosen.append(backend)
                return upstream
            except NoExtendedConnect as exc:
                unsupported = exc  # says nothing about the backend's health
                continue
            except (ConnectFailed, ConnectTimedOut) as exc:
                outcome = (False, exc.kind)
                chosen.append(backend)
                failed = exc
                attempts += 1
                if attempts >= max(1, ctx.limits.pool.max_attempts):
                    raise
                if not budget.admit(holding):
                    ctx.on_retry_denied()
                    raise
                holding = True
            except HttpError as exc:
                outcome = (False, exc.kind)
                chosen.append(backend)
                raise
            finally:
                ctx.on_backend_result(
                    backend, outcome[0], outcome[1], trio.current_time() - started_at
                )
    finally:
        budget.request_finished(holding)


async def _open_h1(
    ctx: ProxyContext, back: H1Back, backend: Backend, forwarded: RequestHead
) -> _Upstream:
    """A fresh connection from the tunnel budget and an HTTP/1.1 Upgrade handshake."""
    conn = await back.pool.acquire(backend, fresh=True, tunnel=True)

    async def close(orderly: bool) -> None:
        await back.pool.release(conn, reusable=False)

    try:
        key = new_key(ctx.rng)
        upgrade = RequestHead(
            b"GET",
            forwarded.scheme,
            forwarded.authority,
            forwarded.path,
            upgrade_fields(forwarded.headers, key),
        )
        answer, leftover = await upgrade_upstream(
            conn.stream, request_head_bytes(upgrade, 0), ctx.limits
        )
        check_upgrade_response(answer.status, answer.headers, key)
    except BaseException:
        with trio.CancelScope(shield=True):
            await close(False)
        raise
    return _Upstream(conn.stream, tunnel_response_fields(answer.headers), leftover, close)


async def _open_h2(
    ctx: ProxyContext, back: H2Back, backend: Backend, forwarded: RequestHead
) -> _Upstream:
    """An extended CONNECT stream on a pooled connection whose backend announced RFC 8441."""
    try:
        conn = await back.pool.acquire(backend)
    except BadGateway as exc:  # UpstreamRefused: connect failed, or no SETTINGS
        raise ConnectFailed(str(exc), kind=exc.kind) from None
    if not conn.h2.remote_settings.enable_connect_protocol:
        conn.release_reservation()
        raise NoExtendedConnect(
            f"{backend.id} speaks HTTP/2 without SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441)"
        )
    try:
        stream = conn.open_stream(extended_connect_fields(forwarded, conn.scheme), end_stream=False)
    except h2.exceptions.ProtocolError as exc:
        raise BadGateway(f"extended CONNECT not expressible: {exc}", kind="upstream_request")

    async def close(orderly: bool) -> None:
        # Our END_STREAM only while the backend's side is open: past its END_STREAM a reset
        # closes the stream (hypercorn drops its whole connection on DATA there).
        if orderly and not stream.finished and not stream.remote_ended:
            with trio.move_on_after(_CLOSE_S):
                await conn.end_stream(stream, [])
        conn.forget(stream)  # resets the stream unless both ends ended

    try:
        with trio.move_on_after(ctx.limits.header_timeout_ms / 1000) as scope:
            answer = await stream.wait_head()
        if scope.cancelled_caught:
            raise GatewayTimeout("websocket handshake timed out", kind="ws_handshake_timeout")
        if not 200 <= answer.status < 300:  # RFC 9110 §9.3.6: any 2xx opens the tunnel
            raise BadGateway(
                f"backend answered the extended CONNECT with {answer.status}", kind="ws_refused"
            )
    except BaseException:
        conn.forget(stream)
        raise
    return _Upstream(
        _H2UpstreamSide(conn, stream), tunnel_response_fields(answer.headers), b"", close
    )
