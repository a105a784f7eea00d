"""The HTTP/2 front adapter: one client connection, many request streams (h2 library).

Owns the connection: our SETTINGS (concurrency, windows, header list size, no push), the
reader (frames → events → streams; it never waits on a stream, so one slow stream cannot
stall the others), the single writer (every frame leaves through it, in order), the
concurrency limit answered with REFUSED_STREAM, the flood defences h2 does not have
(gateway/http/h2_guard: rapid reset, PING / SETTINGS / empty DATA / PRIORITY floods →
GOAWAY ENHANCE_YOUR_CALM), keep-alive PINGs and the idle close, and the two-step drain: a
first GOAWAY that rejects nothing, streams served during the drain budget, a final GOAWAY
with the last stream processed (later streams refused with REFUSED_STREAM, safe to retry),
then the close. Each stream runs the proxy core (workers/http/core) in a task of its own, an
extended CONNECT for WebSocket (RFC 8441, announced by SETTINGS_ENABLE_CONNECT_PROTOCOL) the
bridge (workers/http/ws_stream_bridge); a lapse or upstream failure ends that stream only. Must
never parse HTTP/1.1 or pick backends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h2.stream
import structlog
import trio
from hyperframe.frame import GoAwayFrame

from gateway.http import h2_guard
from gateway.http.errors import (
    BadRequest,
    HttpError,
    MisdirectedRequest,
    NotImplementedMethod,
)
from gateway.http.limits import H2Limits
from gateway.http.misdirected import is_misdirected
from gateway.http.model import HeaderList, RequestHead, comma_tokens, request_from_pseudo
from gateway.http.ws_bridge import is_websocket_protocol, split_protocol
from workers.http import h2_repr_patch  # noqa: F401  (a cheaper frame repr, see there)
from workers.http.context import ProxyContext
from workers.http.core import proxy_exchange
from workers.http.front import ClientConn, unserved_record
from workers.http.h2_stream import H2RequestBody, H2ResponseSink
from workers.http.ws_stream_bridge import TUNNEL_BODY_CAP_BYTES, serve_websocket_stream
from workers.http1.context import RequestRecord
from workers.http1.exchange_steps import ClientGone

log = structlog.get_logger("expressgateway.h2")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_READ_BYTES = 65_536
# After the final GOAWAY: how long, and how much client input, the close waits through.
_LINGER_S = 0.5
_LINGER_BYTES = 1024 * 1024
# Framed bytes a connection may hold before its streams' senders wait for the socket.
SEND_BACKLOG_BYTES = 256 * 1024
_FINAL_FLUSH_S = 1.0
_ENCODER_TABLE_BYTES = 4_096  # the HPACK default (RFC 7541 §6.5.2 initial value)
_MAX_STREAM_ID = 2**31 - 1
_Codes = h2.errors.ErrorCodes
_S = h2.settings.SettingCodes


class _Settings(h2.settings.Settings):
    """Advertises our MAX_CONCURRENT_STREAMS but lets h2 admit more, so a stream over the
    limit is refused with REFUSED_STREAM (RFC 9113 §5.1.2) rather than ending the connection
    (h2 raises a connection error); floods of refusals are counted by the guard."""

    hard_stream_cap = 2**31

    @property  # type: ignore[override,misc]
    def max_concurrent_streams(self) -> int:
        return self.hard_stream_cap


class _ServerConnection(h2.connection.H2Connection):
    """h2's server connection, counting the frames a client sends on a stream it reset
    itself: h2 answers each with an RST_STREAM of its own and reports no event (the
    original bounds such local resets at 100). Frames on streams *we* reset are not counted:
    a well-behaved client may still have some in flight."""

    frames_after_client_reset = 0

    def _count_if_client_reset(self, stream_id: int) -> None:
        if self._stream_closed_by(stream_id) is h2.stream.StreamClosedBy.RECV_RST_STREAM:
            self.frames_after_client_reset += 1

    def _stream_is_closed_by_reset(self, stream_id: int) -> bool:  # frames but DATA
        self._count_if_client_reset(stream_id)
        return super()._stream_is_closed_by_reset(stream_id)

    def _handle_data_on_closed_stream(  # type: ignore[no-untyped-def]
        self, events, exc, frame
    ):  # DATA frames
        self._count_if_client_reset(frame.stream_id)
        return super()._handle_data_on_closed_stream(events, exc, frame)


@dataclass(slots=True)
class _Stream:
    body: H2RequestBody
    sink: H2ResponseSink
    scope: trio.CancelScope
    protocol: bytes | None = None  # an extended CONNECT's :protocol (RFC 8441)


class H2ServerConnection:
    def __init__(self, client: ClientConn, ctx: ProxyContext, limits: H2Limits) -> None:
        self.client = client
        self.stream = client.stream
        self.ctx = ctx
        self.limits = limits
        config = h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=True
        )
        self.h2 = _ServerConnection(config)
        settings = {
            _S.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            _S.INITIAL_WINDOW_SIZE: limits.initial_stream_window_size,
            _S.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
            _S.MAX_FRAME_SIZE: limits.max_frame_size,
            _S.ENABLE_PUSH: 0,
        }
        # RFC 8441 §3: extended CONNECT, offered only where WebSocket is on at all.
        self.connect_protocol = limits.enable_connect_protocol and ctx.limits.websocket.enabled
        if self.connect_protocol:
            settings[_S.ENABLE_CONNECT_PROTOCOL] = 1
        self.h2.local_settings = _Settings(client=False, initial_values=settings)
        self.h2.decoder.max_header_list_size = limits.max_header_list_size
        self.streams: dict[int, _Stream] = {}
        self.guard = h2_guard.FloodGuard(limits, trio.current_time())
        self.stall_s = ctx.limits.body_timeout_ms / 1000
        self._wake_writer = trio.Event()
        self._backlog = 0  # bytes framed but not yet written to the socket
        self._drained = trio.Event()
        self._writer_done = trio.Event()
        self._windows: dict[int, trio.Event] = {}
        self._extra: list[bytes] = []
        self._closing = False  # no new stream; done when the last one ends
        self._dead = False  # fatal: nothing more is read or answered
        self._done = trio.Event()
        self._last_stream_id = _MAX_STREAM_ID  # once closing, streams above it are refused
        self._heard_at = trio.current_time()  # the client's last bytes (PING liveness)
        self._idle_since = self._heard_at  # the last stream's end (the idle close)
        self._ping_sent_at: float | None = None
        self._nursery: trio.Nursery | None = None
        # The certificate the handshake chose, for the misdirected-request check (421).
        names = ctx.server_names
        self.certificate = names.certificate_for_sni(client.sni) if names is not None else 0

    # ---- life ----

    async def serve(self, preread: bytes = b"") -> None:
        self.h2.initiate_connection()
        extra_window = self.limits.initial_connection_window_size - 65_535
        if extra_window > 0:
            self.h2.increment_flow_control_window(extra_window)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._write_loop)
                nursery.start_soon(self._keepalive_loop)
                nursery.start_soon(self._drain_watch)
                if preread:
                    self._on_bytes(preread)
                nursery.start_soon(self._read_loop)
                await self._done.wait()
                # The writer sends what is queued (a GOAWAY among it) and returns: cancelled
                # inside send_all, bytes it took would be lost, not left for the final flush.
                self._kick()
                with trio.move_on_after(_FINAL_FLUSH_S):
                    await self._writer_done.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1.0):
                    if not self._dead:
                        last = min(self._last_stream_id, self.h2.highest_inbound_stream_id)
                        try:
                            self.h2.close_connection(_Codes.NO_ERROR, last_stream_id=last)
                        except h2.exceptions.ProtocolError:
                            pass
                    await self._flush_now()
                    await self._linger()
                await trio.aclose_forcefully(self.stream)

    async def _linger(self) -> None:
        """Half-close, then drop what the client still sends for a moment (at most
        ``_LINGER_BYTES``): closing on unread input resets the connection, and a reset can
        destroy the GOAWAY we just sent before the client reads it."""
        stream = self.stream
        if not isinstance(stream, trio.SocketStream):
            return  # TLS has no half-close; its close_notify is the end
        dropped = 0
        with trio.move_on_after(_LINGER_S):
            try:
                await stream.send_eof()
                while dropped < _LINGER_BYTES:
                    data = await stream.receive_some(_READ_BYTES)
                    if not data:
                        return
                    dropped += len(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
                return

    def _close_when_idle(self) -> None:
        """Take no new stream; the connection ends once the streams in flight ended."""
        self._closing = True
        if not self.streams:
            self._done.set()

    async def _read_loop(self) -> None:
        while not self._dead:
            try:
                data = await self.stream.receive_some(_READ_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self._dead = True  # the client left: its streams end now
                for st in self.streams.values():
                    st.body.fail(ClientGone("client closed the connection"))
                    st.scope.cancel()
                self._done.set()
                return
            self._on_bytes(data)

    def _on_bytes(self, data: bytes | bytearray) -> None:
        self._heard_at = trio.current_time()
        self._ping_sent_at = None  # anything from the client proves it alive
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            code = getattr(exc, "error_code", _Codes.PROTOCOL_ERROR)
            # h2's DoS error is the decoded header list past our setting (HPACK bomb); any
            # other (CONTINUATION flood, connection-specific field, content-length vs DATA)
            # is a protocol error.
            dos = isinstance(exc, h2.exceptions.DenialOfServiceError)
            self.ctx.on_reject("header_list_too_large" if dos else "h2_protocol_error")
            self._fatal(code, f"h2 protocol error: {exc}")
            return
        now = trio.current_time()
        for event in events:
            self._on_event(event, now)
            if self._dead:
                break
        after_reset = self.h2.frames_after_client_reset
        if after_reset and not self._dead:
            self.h2.frames_after_client_reset = 0
            self._flood(h2_guard.RESET, now, after_reset)
        self._kick()

    def _fatal(self, code: int, why: str) -> None:
        """Close the connection with GOAWAY ``code``; every stream ends."""
        if self._dead:
            return
        self._dead = self._closing = True
        try:
            self.h2.close_connection(error_code=code)
        except h2.exceptions.ProtocolError:
            pass
        for st in self.streams.values():
            st.body.fail(ClientGone(why))
            st.scope.cancel()
        self._kick()
        self._done.set()

    def _flood(self, kind: int, now: float, count: int = 1) -> None:
        if self.guard.hit(kind, now, count):
            reason = h2_guard.KIND_NAMES[kind]
            self.ctx.on_reject(reason)
            self._fatal(_Codes.ENHANCE_YOUR_CALM, reason)

    # ---- events ----

    def _on_event(self, event: h2.events.Event, now: float) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._on_request(event)
        elif isinstance(event, h2.events.DataReceived):
            st = self.streams.get(event.stream_id)
            if not event.data and not event.stream_ended:
                self._flood(h2_guard.EMPTY_DATA, now)
            if st is None:
                self.acknowledge(event.stream_id, event.flow_controlled_length)
            elif event.data or event.flow_controlled_length:
                st.body.push(event.data, event.flow_controlled_length)
        elif isinstance(event, h2.events.TrailersReceived):
            st = self.streams.get(event.stream_id)
            if st is not None:
                st.body.end(_trailers(event.headers))
        elif isinstance(event, h2.events.StreamEnded):
            st = self.streams.get(event.stream_id)
            if st is not None:
                st.body.end()
        elif isinstance(event, h2.events.StreamReset):
            self._on_reset(event, now)
        elif isinstance(event, h2.events.WindowUpdated):
            self._on_window(event.stream_id)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self._flood(h2_guard.SETTINGS, now)
            if _S.HEADER_TABLE_SIZE in event.changed_settings:
                # h2 sizes our HPACK encoder to whatever the client allows (up to 4 GiB of
                # response headers kept per connection); less is allowed (RFC 7541 §4.2).
                encoder = self.h2.encoder
                encoder.header_table_size = min(encoder.header_table_size, _ENCODER_TABLE_BYTES)
            self._on_window(0)
        elif isinstance(event, h2.events.PingReceived):
            self._flood(h2_guard.PING, now)
        elif isinstance(event, h2.events.PriorityUpdated):
            self._flood(h2_guard.PRIORITY, now)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._close_when_idle()  # the client's GOAWAY: it opens nothing more

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id
        ended = event.stream_ended is not None
        now = trio.current_time()
        # Streams whose END_STREAM or RST_STREAM went out are closed for the client (RFC 9113
        # §5.1.2) while their task finishes: counting them refused a compliant client.
        active = sum(1 for st in self.streams.values() if not st.sink.finished)
        if (
            self._closing and sid > self._last_stream_id
        ) or active >= self.limits.max_concurrent_streams:
            self.reset(sid, _Codes.REFUSED_STREAM)  # not processed: safe for the client to retry
            self._flood(h2_guard.REFUSED, now)
            return
        protocol, fields = split_protocol(list(event.headers))
        if protocol is not None and not self.connect_protocol:
            # h2 admits :protocol whatever we announced; unannounced, it is malformed.
            self.reset(sid, _Codes.PROTOCOL_ERROR)  # RFC 8441 §4, RFC 9113 §8.1.1
            return
        try:
            head = request_from_pseudo(fields, http_version=b"2")
        except BadRequest:
            self.reset(sid, _Codes.PROTOCOL_ERROR)  # malformed (RFC 9113 §8.1.1)
            return
        head.scheme = self.client.scheme
        expect = comma_tokens(head.headers, b"expect")
        head.headers = [(n, v) for n, v in head.headers if n != b"expect"]
        tunnel = protocol is not None  # its own idle timeout and per-message cap apply
        body = H2RequestBody(
            self,
            sid,
            _declared_length(head.headers, ended),
            max_body_bytes=TUNNEL_BODY_CAP_BYTES if tunnel else self.ctx.limits.max_body_bytes,
            idle_s=math.inf if tunnel else self.ctx.limits.body_timeout_ms / 1000,
            expect_continue=not ended and expect == [b"100-continue"],
        )
        if ended:
            body.end()
        st = _Stream(body, H2ResponseSink(self, sid, self.stall_s), trio.CancelScope(), protocol)
        self.streams[sid] = st
        assert self._nursery is not None
        self._nursery.start_soon(self._run_stream, sid, st, head)

    def _on_reset(self, event: h2.events.StreamReset, now: float) -> None:
        st = self.streams.get(event.stream_id)
        if event.remote_reset and (st is None or not st.sink.finished):
            self._flood(h2_guard.RESET, now)
        if st is not None:
            st.sink.finished = True
            st.body.fail(ClientGone("client reset the stream", kind="client_reset"))
            st.scope.cancel()  # the upstream stream is reset at once (the core releases it)

    def _on_window(self, stream_id: int) -> None:
        if stream_id == 0:
            for ev in self._windows.values():
                ev.set()
            self._windows.clear()
        elif stream_id in self._windows:
            self._windows.pop(stream_id).set()

    # ---- streams ----

    async def _run_stream(self, sid: int, st: _Stream, head: RequestHead) -> None:
        started_at = trio.current_time()
        record: RequestRecord | None = None
        try:
            with st.scope:
                refusal = self._refusal(head, st.protocol)
                if refusal is not None:
                    await st.sink.send_error(refusal)
                    record = _failed_record(self, head, started_at, refusal.status, refusal.kind)
                elif st.protocol is not None:
                    record = await serve_websocket_stream(
                        self.ctx, head, st.body, st.sink, client_ip=self.client.client_ip
                    )
                else:
                    record = await proxy_exchange(
                        self.ctx,
                        head,
                        st.body,
                        st.sink,
                        client_ip=self.client.client_ip,
                        front="h2",
                    )
            if record is None:
                record = _failed_record(self, head, started_at, 0, "client_reset")
            self.ctx.on_request_done(record)
        finally:
            self.streams.pop(sid, None)
            self._idle_since = trio.current_time()
            if sid in self._windows:
                del self._windows[sid]
            self._kick()
            if self._closing and not self.streams:
                self._done.set()

    def _refusal(self, head: RequestHead, protocol: bytes | None) -> HttpError | None:
        """A request this front answers itself: CONNECT (not proxied; of the extended
        CONNECTs only WebSocket is) or one for a host another certificate of this listener
        serves (421, RFC 9113 §9.1.2)."""
        if protocol is not None and not is_websocket_protocol(protocol):
            return NotImplementedMethod(f"extended CONNECT for {protocol!r} is not proxied")
        if head.method == b"CONNECT" and protocol is None:
            return NotImplementedMethod("CONNECT is not proxied")
        names = self.ctx.server_names
        if names is not None and is_misdirected(names, self.certificate, head.authority):
            return MisdirectedRequest("authority served by another certificate")
        return None

    def acknowledge(self, stream_id: int, flow_len: int) -> None:
        """Reopen the client's windows for ``flow_len`` bytes the core took (or dropped)."""
        if flow_len <= 0 or self._dead:
            return
        try:
            self.h2.acknowledge_received_data(flow_len, stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self._kick()

    def send_interim(self, stream_id: int, status: int) -> None:
        try:
            self.h2.send_headers(stream_id, [(b":status", b"%d" % status)])
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self._kick()

    def reset(self, stream_id: int, code: int) -> None:
        try:
            self.h2.reset_stream(stream_id, code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self._kick()

    async def wait_for_window(self, stream_id: int, timeout_s: float) -> bool:
        """Wait for a WINDOW_UPDATE (or SETTINGS) that may open ``stream_id``; False on stall."""
        ev = self._windows.get(stream_id)
        if ev is None:
            ev = self._windows[stream_id] = trio.Event()
        with trio.move_on_after(timeout_s):
            await ev.wait()
            return True
        return False

    # ---- writing ----

    def _kick(self) -> None:
        self._wake_writer.set()

    async def room_to_send(self, queued: int) -> None:
        """Count ``queued`` bytes a stream just framed; while the writer's backlog is past
        ``SEND_BACKLOG_BYTES``, wait for it to drain (a client that reads slowly holds
        every stream's sender here, not in memory)."""
        self._backlog += queued
        self._kick()
        while self._backlog > SEND_BACKLOG_BYTES and not self._dead:
            self._drained = trio.Event()
            await self._drained.wait()

    async def _write_loop(self) -> None:
        while True:
            # One scheduling round first: frames other streams queue meanwhile leave in the
            # same write (one syscall for many small HEADERS and DATA frames).
            await trio.lowlevel.cancel_shielded_checkpoint()
            data = self._take_output()
            if not data:
                self._backlog = 0
                self._drained.set()
                if self._done.is_set():
                    self._writer_done.set()  # all sent: the connection may close
                    return
                self._wake_writer = trio.Event()
                await self._wake_writer.wait()
                continue
            self._backlog = len(data)
            with trio.move_on_after(self.stall_s) as scope:
                try:
                    await self.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._fatal(_Codes.CANCEL, "client connection broken")
                    self._writer_done.set()
                    return
            if scope.cancelled_caught:
                self._fatal(_Codes.CANCEL, "client stopped reading")
                self._writer_done.set()
                return

    def _take_output(self) -> bytes:
        data = self.h2.data_to_send()
        if self._extra:
            data += b"".join(self._extra)
            self._extra.clear()
        return data

    async def _flush_now(self) -> None:
        data = self._take_output()
        if data:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
                pass

    def _goaway(self, last_stream_id: int) -> None:
        """A GOAWAY (NO_ERROR) that leaves streams up to ``last_stream_id`` running: h2's own
        close_connection closes its connection state machine at once."""
        frame = GoAwayFrame(stream_id=0, last_stream_id=last_stream_id, error_code=0)
        self._extra.append(frame.serialize())
        self._kick()

    # ---- keep-alive, idle, drain ----

    async def _keepalive_loop(self) -> None:
        """PING a quiet connection (no answer within the timeout: close); close an idle one."""
        limits = self.limits
        interval = limits.keepalive_interval_s
        tick = min(x for x in (interval, limits.idle_timeout_s, 5.0) if x > 0)
        while not self._closing:
            await trio.sleep(tick)
            now = trio.current_time()
            ping_at = self._ping_sent_at
            if ping_at is not None and now - ping_at > limits.keepalive_timeout_s:
                self._fatal(_Codes.NO_ERROR, "keep-alive ping unanswered")
                return
            if not self.streams and now - self._idle_since >= limits.idle_timeout_s:
                self._close_when_idle()
                return
            if interval > 0 and ping_at is None and now - self._heard_at >= interval:
                self._ping_sent_at = now
                self.h2.ping(b"eg-alive")
                self._kick()

    async def _drain_watch(self) -> None:
        ctx = self.ctx
        await ctx.draining.wait()
        self._goaway(_MAX_STREAM_ID)  # rejects nothing: clients move new requests elsewhere
        # One round trip for requests already on their way, within the drain budget.
        grace_s = min(1.0, max(0.0, ctx.drain_deadline_at - trio.current_time()))
        await trio.sleep(grace_s)
        self._last_stream_id = self.h2.highest_inbound_stream_id
        self._goaway(self._last_stream_id)
        self._close_when_idle()


def _declared_length(headers: HeaderList, ended: bool) -> int | None:
    if ended:
        return 0
    for n, v in headers:
        if n == b"content-length":
            return int(v) if v.isdigit() else None
    return None


_FORBIDDEN_TRAILERS = frozenset(
    (b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"proxy-connection", b"te")
)


def _trailers(headers: list[tuple[bytes, bytes]]) -> HeaderList:
    return [(n, v) for n, v in headers if not n.startswith(b":") and n not in _FORBIDDEN_TRAILERS]


def _failed_record(
    conn: H2ServerConnection, head: RequestHead, started_at: float, status: int, kind: str
) -> RequestRecord:
    return unserved_record(
        conn.ctx.listener, conn.client.client_ip, "h2", head, started_at, status, kind
    )


async def serve_h2_connection(client: ClientConn, ctx: ProxyContext, limits: H2Limits) -> None:
    """Serve one HTTP/2 client connection until it closes; never raises for peer behaviour."""
    conn = H2ServerConnection(client, ctx, limits)
    await conn.serve(client.preread)
