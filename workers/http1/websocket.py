"""WebSocket over HTTP/1.1 Upgrade (RFC 6455): handshake with the backend first, then an
opaque byte tunnel with backpressure, an idle timeout and drain close frames.

Owns: the upstream handshake (101 to the client only after the backend's 101), the tunnel
relay (``WsTunnel``, also the relay of WebSocket over HTTP/2: workers/http/ws_stream_bridge),
and when to inject close frames (idle 1001, drain 1001 at the deadline, oversize 1009, a
client's ping flood 1008) at frame boundaries only. The tunnel's upstream connection takes its slot from the pool's
tunnel budget (``max_tunnels_per_backend``), never an ordinary request's. Must never unmask
or buffer frames (``gateway.http.ws_frames`` tracks boundaries) and never pool a tunnelled
connection.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Protocol

import trio

from gateway.http.errors import BadGateway, GatewayTimeout, HttpError, LocalExhausted, NoBackend
from gateway.http.forwarding import add_forwarding_headers
from gateway.http.framing import NO_BODY
from gateway.http.h1_wire import serialize_request_head, serialize_response_head
from gateway.http.hop_by_hop import strip_hop_by_hop
from gateway.http.limits import READ_MAX_BYTES, HttpLimits
from gateway.http.model import RequestHead, ResponseHead, comma_tokens
from gateway.http.responses import error_response_h1, reason_for
from gateway.http.traceparent import apply_traceparent
from gateway.http.ws_frames import (
    CLOSE_GOING_AWAY,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TOO_BIG,
    FrameTooLarge,
    FrameTracker,
    PingBudget,
    close_frame,
)
from workers.http1.backend import Backend, ConnectFailed, ConnectTimedOut
from workers.http1.context import H1Context
from workers.http1.message_reader import END, HEAD, UPGRADE, MessageReader, ParsedHead
from workers.http1.pool import UpstreamConn
from workers.http1.socket_io import send_all as send_settled

_UPGRADE_FIELDS = [(b"connection", b"upgrade"), (b"upgrade", b"websocket")]


@dataclass(slots=True)
class TunnelResult:
    status: int
    bytes_in: int = 0
    bytes_out: int = 0
    backend_id: str | None = None
    error_kind: str | None = None


def is_websocket_request(head: RequestHead) -> bool:
    return head.method == b"GET" and b"websocket" in comma_tokens(head.headers, b"upgrade")


async def _connect(ctx: H1Context, head: RequestHead, client: str) -> UpstreamConn:
    pool = ctx.upstream_pool()
    tried: list[Backend] = []
    budget = ctx.retry_budget()  # counted while connecting only: a tunnel is no request
    budget.request_started()
    holding = False
    try:
        for attempt in range(1, max(1, ctx.limits.pool.max_attempts) + 1):
            backend = ctx.pick_backend(head, client, tried)
            if backend is None:
                raise NoBackend("no backend available")
            tried.append(backend)
            started_at = trio.current_time()
            try:
                return await pool.acquire(backend, fresh=True, tunnel=True)
            except (ConnectFailed, ConnectTimedOut) as exc:
                ctx.on_backend_result(backend, False, exc.kind, trio.current_time() - started_at)
                if attempt >= ctx.limits.pool.max_attempts:
                    raise
                if not budget.admit(holding):
                    ctx.on_retry_denied()
                    raise
                holding = True
            except LocalExhausted:  # our descriptors, not the backend's: a neutral outcome
                ctx.on_backend_result(backend, True, "aborted", trio.current_time() - started_at)
                raise
    finally:
        budget.request_finished(holding)
    raise NoBackend("no backend available")


async def _handshake(
    ctx: H1Context, conn: UpstreamConn, head: RequestHead, client: str
) -> tuple[ParsedHead, bytes]:
    headers = strip_hop_by_hop(head.headers)
    headers = add_forwarding_headers(
        headers,
        peer_ip=client,
        proto=ctx.scheme,
        host=head.authority or None,
        keep_inbound=ctx.limits.forwarding.keeps_inbound(client),
    )
    apply_traceparent(headers, ctx.rng)
    wire = serialize_request_head(
        RequestHead(head.method, head.scheme, head.authority, head.path, headers),
        NO_BODY,
        extra=_UPGRADE_FIELDS,
    )
    return await upgrade_upstream(conn.stream, wire, ctx.limits)


async def upgrade_upstream(
    stream: trio.abc.Stream, wire: bytes, limits: HttpLimits
) -> tuple[ParsedHead, bytes]:
    """Send the upgrade request ``wire``; the backend's 101 head and the bytes that followed
    it (already tunnel bytes). Anything but a 101 within the header timeout fails."""
    reader = MessageReader(stream, limits, is_request=False)
    with trio.move_on_after(limits.header_timeout_ms / 1000) as scope:
        try:
            await send_settled(stream, wire)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise BadGateway("upstream write failed", kind="upstream_write")
        tag, payload = await reader.next_event()
        if tag != HEAD or not isinstance(payload, ParsedHead) or payload.status != 101:
            raise BadGateway("backend refused the websocket upgrade", kind="ws_refused")
        leftover = b""
        while tag != UPGRADE:
            tag, extra = await reader.next_event()
            if tag == UPGRADE and isinstance(extra, bytes):
                leftover = extra
            elif tag not in (END, UPGRADE):
                raise BadGateway("unexpected bytes after 101", kind="upstream_protocol")
        return payload, leftover
    assert scope.cancelled_caught
    raise GatewayTimeout("websocket handshake timed out", kind="ws_handshake_timeout")


async def proxy_websocket(
    ctx: H1Context, client_stream: trio.abc.Stream, head: RequestHead, leftover: bytes, client: str
) -> TunnelResult:
    """Handshake with a backend, answer 101, relay until either side ends, idle or drain."""
    result = TunnelResult(status=0)
    conn: UpstreamConn | None = None
    try:
        conn = await _connect(ctx, head, client)
        result.backend_id = conn.backend.id
        started_at = trio.current_time()
        outcome: tuple[bool, str] = (True, "aborted")
        try:
            up_head, up_leftover = await _handshake(ctx, conn, head, client)
            outcome = (True, "ok")
        except HttpError as exc:
            outcome = (False, exc.kind)
            raise
        finally:
            ctx.on_backend_result(
                conn.backend, outcome[0], outcome[1], trio.current_time() - started_at
            )
        headers = [*strip_hop_by_hop(up_head.headers), *_UPGRADE_FIELDS]
        wire = serialize_response_head(
            ResponseHead(101, reason_for(101), headers), None, close=False
        )
        await send_settled(client_stream, wire + up_leftover)
        result.status = 101
        tunnel = WsTunnel(ctx, client_stream, conn.stream)
        await tunnel.run(leftover)
        result.bytes_in, result.bytes_out = tunnel.bytes_up, tunnel.bytes_down
        result.error_kind = tunnel.reason if tunnel.reason not in ("eof",) else None
    except HttpError as exc:
        result.error_kind = exc.kind
        if result.status == 0:
            result.status = exc.status
            with trio.move_on_after(1.0):
                try:
                    await send_settled(client_stream, error_response_h1(exc.status, close=True))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    result.status = 0
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        result.error_kind = "client_write"
    finally:
        if conn is not None:
            with trio.CancelScope(shield=True):
                await ctx.upstream_pool().release(conn, reusable=False)
    return result


class ByteStream(Protocol):
    """One side of a tunnel: a socket, or an HTTP/2 stream seen as bytes (b"" is its end)."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray: ...

    async def send_all(self, data: bytes | bytearray | memoryview) -> None: ...


class TunnelContext(Protocol):
    """What a tunnel needs of its listener (H1Context and the proxy core's ProxyContext)."""

    limits: HttpLimits
    draining: trio.Event
    drain_deadline_at: float
    rng: random.Random


class WsTunnel:
    """Relays WebSocket bytes both ways, frame boundaries tracked, until either side ends,
    the tunnel idles, a message passes the cap, or the drain deadline comes."""

    def __init__(self, ctx: TunnelContext, client: ByteStream, upstream: ByteStream) -> None:
        self.ctx = ctx
        self.client = client
        self.upstream = upstream
        limits = ctx.limits.websocket
        self.idle_s = limits.idle_timeout_s
        self.to_upstream = FrameTracker(limits.max_message_size_bytes)
        self.to_client = FrameTracker(limits.max_message_size_bytes)
        self.client_pings = PingBudget(limits.max_pings_per_window, limits.ping_window_s)
        self.last_activity_at = trio.current_time()
        self.recv_scopes: set[trio.CancelScope] = set()
        self.watch_scope = trio.CancelScope()
        self.reason: str | None = None
        self.bytes_up = 0
        self.bytes_down = 0

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        for scope in self.recv_scopes:
            scope.cancel()
        self.watch_scope.cancel()

    async def run(self, client_leftover: bytes, upstream_leftover: bytes = b"") -> None:
        if upstream_leftover:
            self.to_client.feed(upstream_leftover)
            await self.client.send_all(upstream_leftover)
            self.bytes_down += len(upstream_leftover)
        if client_leftover:
            self.to_upstream.feed(client_leftover)
            await self.upstream.send_all(client_leftover)
            self.bytes_up += len(client_leftover)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, self.client, self.upstream, self.to_upstream, True)
            nursery.start_soon(self._pump, self.upstream, self.client, self.to_client, False)
            nursery.start_soon(self._watch)
        await self._close_frames()

    async def _pump(
        self, src: ByteStream, dst: ByteStream, tracker: FrameTracker, up: bool
    ) -> None:
        while self.reason is None:
            with trio.CancelScope() as scope:
                self.recv_scopes.add(scope)
                try:
                    data = await src.receive_some(READ_MAX_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                finally:
                    self.recv_scopes.discard(scope)
            if scope.cancelled_caught:
                return
            if not data:
                self.stop("eof")
                return
            self.last_activity_at = now = trio.current_time()
            pings = tracker.pings
            try:
                tracker.feed(data)
            except FrameTooLarge:
                self.stop("ws_message_too_big")
                return
            # A ping flood is relayed up to the read that overspent the budget (so the frame
            # tracker still describes what the backend got), then closed with 1008.
            flood = (
                up
                and tracker.pings > pings
                and not self.client_pings.admit(tracker.pings - pings, now)
            )
            with trio.move_on_after(self.idle_s) as send_scope:
                try:
                    await dst.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.stop("eof")
                    return
            if send_scope.cancelled_caught:
                self.stop("ws_send_timeout")
                return
            if up:
                self.bytes_up += len(data)
            else:
                self.bytes_down += len(data)
            if flood:
                self.stop("ws_ping_flood")
                return

    async def _watch(self) -> None:
        with self.watch_scope:
            while True:
                drain_at = self.ctx.drain_deadline_at if self.ctx.draining.is_set() else math.inf
                idle_at = self.last_activity_at + self.idle_s
                with trio.move_on_at(min(drain_at, idle_at)):
                    if drain_at == math.inf:
                        await self.ctx.draining.wait()
                        continue
                    await trio.sleep_forever()
                now = trio.current_time()
                if now >= drain_at:
                    self.stop("drain")
                elif now >= self.last_activity_at + self.idle_s:
                    self.stop("ws_idle")

    async def _close_frames(self) -> None:
        code = {
            "drain": CLOSE_GOING_AWAY,
            "ws_idle": CLOSE_GOING_AWAY,
            "ws_message_too_big": CLOSE_TOO_BIG,
            "ws_ping_flood": CLOSE_POLICY_VIOLATION,
        }.get(self.reason or "")
        if code is None:
            return
        with trio.move_on_after(1.0):
            try:
                if self.to_client.at_boundary:
                    await self.client.send_all(close_frame(code, masked=False))
                if self.to_upstream.at_boundary:
                    await self.upstream.send_all(close_frame(code, masked=True, rng=self.ctx.rng))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
