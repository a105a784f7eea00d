"""The HTTP/3 front adapter: one QUIC connection, many request streams (aioquic's H3 layer).

Owns the H3 application on a QuicSession (workers/quic_listener.py): QUIC events → H3
events → request streams, each running the proxy core (workers/http/core) in a task of its
own with an H3RequestBody and an H3ResponseSink (workers/http/h3_stream.py); the
concurrency limit (a stream over it is reset with H3_REQUEST_REJECTED: not processed, safe
to retry); a malformed request resets its stream with H3_MESSAGE_ERROR (RFC 9114 §4.1.2)
where aioquic would close the whole connection; the misdirected-request check (421) on
listeners with several certificates; and the two-step drain: a first GOAWAY that rejects
nothing, streams served during the drain budget, a final GOAWAY naming the first stream not
processed (later ones reset with H3_REQUEST_REJECTED), 425 Too Early for a request other
than GET/HEAD/OPTIONS whose stream came in 0-RTT (``early_data`` on), recycling after
``max_requests_per_connection`` (a GOAWAY naming the next stream, CONNECTION_CLOSE once
every response is acknowledged), CONNECTION_CLOSE (H3_NO_ERROR) once
idle or at the budget. WebSocket over HTTP/3 (RFC 9220): SETTINGS_ENABLE_CONNECT_PROTOCOL
in our SETTINGS when ``enable_connect_protocol`` and WebSocket are on, and an extended
CONNECT with ``:protocol = websocket`` handed to the tunnel bridge of WebSocket over HTTP/2
(workers/http/ws_stream_bridge); ``:protocol`` unannounced, on another method or without
``:scheme``/``:path`` is malformed (H3_MESSAGE_ERROR on that stream, RFC 9220 §3 with
RFC 8441 §4 and RFC 9114 §4.1.2), another protocol is answered 501. QPACK: our SETTINGS
(table capacity, blocked streams, SETTINGS_MAX_FIELD_SECTION_SIZE) and a decoder that
measures each field section before decoding it (workers/http/h3_qpack); a request whose
section is over the limit gets 431 on its stream (RFC 9114 §4.2.2), a trailer section over
it fails its request; bytes buffered by a stream blocked on QPACK get no flow-control
credit. A lapse or upstream failure ends one stream, never the connection.
Must never parse HTTP/1.1, pick backends or touch the socket.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import structlog
import trio
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import (
    ErrorCode,
    FrameType,
    H3Connection,
    HeadersState,
    MessageError,
    Setting,
    encode_frame,
)
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.connection import stream_is_client_initiated, stream_is_unidirectional
from aioquic.quic.events import QuicEvent, StopSendingReceived, StreamDataReceived, StreamReset

from gateway.http.errors import (
    BadRequest,
    HeadersTooLarge,
    HttpError,
    MisdirectedRequest,
    NotImplementedMethod,
    TooEarly,
)
from gateway.http.h3_limits import H3Limits
from gateway.http.misdirected import is_misdirected
from gateway.http.model import HeaderList, RequestHead, request_from_pseudo
from gateway.http.ws_bridge import is_websocket_protocol, split_protocol
from workers.http.context import ProxyContext
from workers.http.core import proxy_exchange
from workers.http.front import unserved_record
from workers.http.h3_qpack import BoundedFieldSections
from workers.http.h3_stream import SEND_ERRORS, H3RequestBody, H3ResponseSink
from workers.http.ws_stream_bridge import TUNNEL_BODY_CAP_BYTES, serve_websocket_stream
from workers.http1.context import RequestRecord
from workers.http1.exchange_steps import ClientGone
from workers.quic_listener import QuicSession

log = structlog.get_logger("expressgateway.h3")

# The largest client-initiated bidirectional stream id a GOAWAY can carry (RFC 9114 §5.2):
# a first GOAWAY with it rejects nothing.
_MAX_REQUEST_STREAM_ID = (1 << 62) - 4
# A closing connection waits this long for the client to acknowledge the last bytes sent.
_FLUSH_S = 2.0
_POLL_S = 0.05
# Past the drain deadline, before the worker cuts what is left (workers/worker.py
# DRAIN_CLOSE_GRACE_S): the goodbyes sent at the deadline get out first.
_DEADLINE_FLUSH_S = 0.25
# Served from 0-RTT early data (replayable): the safe methods of RFC 9110 §9.2.1 but TRACE.
_EARLY_DATA_METHODS = frozenset((b"GET", b"HEAD", b"OPTIONS"))


class _H3Server(BoundedFieldSections, H3Connection):
    """aioquic's H3 connection, with a malformed request made a stream error (RFC 9114
    §4.1.2) instead of a connection error: the stream is remembered and its later frames
    dropped; the front resets it. SETTINGS_ENABLE_CONNECT_PROTOCOL is ours to decide:
    aioquic announces it always (from 1.7; earlier only with WebTransport), we only where
    extended CONNECT is served (RFC 9220 §3). The QPACK settings are ours too (aioquic
    fixes a 4096-byte table and 16 blocked streams and announces no field section limit):
    SETTINGS_MAX_FIELD_SECTION_SIZE is announced and enforced before decoding (a HEADERS
    frame longer than it, or a section that would decode larger, is refused on its stream:
    ``too_large``, answered 431 by the front, RFC 9114 §4.2.2)."""

    def __init__(self, quic: object, *, connect_protocol: bool, limits: H3Limits) -> None:
        self.connect_protocol = connect_protocol  # read by _init_connection in __init__
        self.bound_sections(
            limits.max_field_section_size,
            limits.qpack_max_table_capacity,
            limits.qpack_blocked_streams,
        )
        super().__init__(quic)  # type: ignore[arg-type]
        self.install_decoder()
        self.malformed: list[int] = []

    def _get_local_settings(self) -> dict[int, int]:
        settings: dict[int, int] = super()._get_local_settings()
        if self.connect_protocol:
            settings[Setting.ENABLE_CONNECT_PROTOCOL] = 1
        else:
            settings.pop(Setting.ENABLE_CONNECT_PROTOCOL, None)
        return self.local_qpack_settings(settings)

    def _receive_request_or_push_data(  # type: ignore[no-untyped-def]
        self, stream, data, stream_ended
    ):
        # A malformed request is a stream error, here and in a section resumed after QPACK
        # blocking (below).
        try:
            return super()._receive_request_or_push_data(stream, data, stream_ended)
        except MessageError:
            self._dead.add(stream.stream_id)
            self.malformed.append(stream.stream_id)
            stream.buffer = b""
            return []

    def _handle_request_or_push_frame(  # type: ignore[no-untyped-def]
        self, frame_type, frame_data, stream, stream_ended
    ):
        try:
            return super()._handle_request_or_push_frame(
                frame_type, frame_data, stream, stream_ended
            )
        except MessageError:
            if frame_data is not None:
                raise  # parsing a received frame: _receive_request_or_push_data handles it
            # A section resumed once the encoder stream unblocked it (aioquic calls this
            # from the encoder stream's handling, where an error would end the connection).
            self._dead.add(stream.stream_id)
            self.malformed.append(stream.stream_id)
            stream.buffer = b""
            return []

    def forget(self, stream_id: int) -> None:
        """The front is done with ``stream_id``; a dead one keeps dropping what the client
        still sends on it until its end (or reset): parsing resumed mid-frame would be
        garbage."""
        stream = self._stream.get(stream_id)
        if stream is None or stream.receiving_ended:
            self._dead.discard(stream_id)


@dataclass(slots=True)
class _Stream:
    body: H3RequestBody
    sink: H3ResponseSink
    scope: trio.CancelScope
    protocol: bytes | None = None  # an extended CONNECT's :protocol (RFC 9220)


class H3ServerConnection:
    def __init__(self, session: QuicSession, ctx: ProxyContext, limits: H3Limits) -> None:
        self.session = session
        self.quic = session.quic
        # RFC 9220 §3: extended CONNECT, offered only where WebSocket is on at all.
        self.connect_protocol = limits.enable_connect_protocol and ctx.limits.websocket.enabled
        self.h3 = _H3Server(self.quic, connect_protocol=self.connect_protocol, limits=limits)
        self.ctx = ctx
        self.limits = limits
        self.streams: dict[int, _Stream] = {}
        self.stall_s = ctx.limits.body_timeout_ms / 1000
        self._first_refused = _MAX_REQUEST_STREAM_ID + 4  # streams from here on are refused
        self._highest = -4  # the highest request stream id seen
        self._requests = 0  # request streams taken (toward max_requests_per_connection)
        self._recycling = False
        self._nursery: trio.Nursery | None = None
        names = ctx.server_names
        self.certificate = names.certificate_for_sni(session.sni) if names is not None else 0

    async def serve(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._drain_watch)
                while True:
                    events = await self.session.next_events()
                    if not events:
                        break
                    for event in events:
                        self._on_quic_event(event)
                    self.session.kick()
                nursery.cancel_scope.cancel()
        finally:
            for st in self.streams.values():
                st.body.fail(ClientGone("connection closed"))
                st.scope.cancel()

    # ---- events ----

    def _on_quic_event(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            sid = event.stream_id
            if not stream_is_unidirectional(sid) and stream_is_client_initiated(sid):
                h3_stream = self.h3._stream.get(sid)
                if h3_stream is None or h3_stream.headers_recv_state is HeadersState.INITIAL:
                    self.quic.track(sid)  # a request not parsed yet: credit by consumption
                self.quic.delivered_bytes(sid, len(event.data))
        elif isinstance(event, (StreamReset, StopSendingReceived)):
            if isinstance(event, StreamReset):
                self.h3._dead.discard(event.stream_id)  # nothing more comes on it
            st = self.streams.get(event.stream_id)
            # A reset of a request body we stopped reading (STOP_SENDING, e.g. over the
            # cap) is the client complying, not leaving: its response still goes out
            # (RFC 9114 §4.1: clients must not discard a complete response for it).
            complying = isinstance(event, StreamReset) and st is not None and st.body.discarded
            if st is not None and not complying:
                st.sink.finished = True
                st.body.fail(ClientGone("client reset the stream", kind="client_reset"))
                st.scope.cancel()
        for h3_event in self.h3.handle_event(event):
            self._on_h3_event(h3_event)
        if isinstance(event, StreamDataReceived):
            # What the H3 layer keeps unparsed (a stream blocked on QPACK buffers all it
            # gets) is credited only once parsed: a blocked stream cannot be flooded.
            # Encoder-stream bytes may have unblocked other parked streams: those too.
            self._park(event.stream_id)
            if self.quic.parked:
                for sid in list(self.quic.parked):
                    if sid != event.stream_id:
                        self._park(sid)
        if self.h3.malformed:
            for sid in self.h3.malformed:
                self._malformed(sid)
            self.h3.malformed.clear()
        if self.h3.too_large:
            for sid in self.h3.too_large:
                self._section_too_large(sid)
            self.h3.too_large.clear()

    def _on_h3_event(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            sid = event.stream_id
            h3_stream = self.h3._stream.get(sid)
            if (
                h3_stream is not None
                and h3_stream.headers_recv_state is HeadersState.AFTER_TRAILERS
            ):
                st = self.streams.get(sid)
                if st is not None:
                    st.body.end(_trailers(event.headers))
            else:
                self._on_request(event)
        elif isinstance(event, DataReceived):
            st = self.streams.get(event.stream_id)
            if st is None:
                return
            if event.data:
                st.body.push(event.data)
            if event.stream_ended:
                st.body.end()

    def _on_request(self, event: HeadersReceived) -> None:
        sid = event.stream_id
        self._highest = max(self._highest, sid)
        ended = event.stream_ended
        active = sum(1 for st in self.streams.values() if not st.sink.finished)
        if sid >= self._first_refused or active >= self.limits.max_concurrent_streams:
            self.refuse(sid)  # not processed: safe for the client to retry
            return
        self._requests += 1
        cap = self.limits.max_requests_per_connection
        if cap and self._requests >= cap and not self._recycling:
            self._recycle(sid)
        protocol, fields = split_protocol(list(event.headers))
        try:
            head = request_from_pseudo(fields, http_version=b"3")
        except BadRequest:
            self._malformed(sid)
            return
        if protocol is not None and not self._extended_connect_ok(head):
            self._malformed(sid)
            return
        head.scheme = b"https"
        # No interim 100 on H3 (the client sends its body anyway); the field is hop-by-hop.
        head.headers = [(n, v) for n, v in head.headers if n != b"expect"]
        tunnel = protocol is not None  # its own idle timeout and per-message cap apply
        body = H3RequestBody(
            self,
            sid,
            _declared_length(head.headers, ended),
            max_body_bytes=TUNNEL_BODY_CAP_BYTES if tunnel else self.ctx.limits.max_body_bytes,
            idle_s=math.inf if tunnel else self.ctx.limits.body_timeout_ms / 1000,
        )
        if ended:
            body.end()
        st = _Stream(body, H3ResponseSink(self, sid, self.stall_s), trio.CancelScope(), protocol)
        self.streams[sid] = st
        assert self._nursery is not None
        self._nursery.start_soon(self._run_stream, sid, st, head)

    # ---- streams ----

    async def _run_stream(self, sid: int, st: _Stream, head: RequestHead) -> None:
        started_at = trio.current_time()
        record: RequestRecord | None = None
        try:
            with st.scope:
                refusal = self._refusal(sid, head, st.protocol)
                if refusal is not None:
                    await st.sink.send_error(refusal)
                    record = _failed_record(self, head, started_at, refusal.status, refusal.kind)
                elif st.protocol is not None:
                    record = await serve_websocket_stream(
                        self.ctx,
                        head,
                        st.body,
                        st.sink,
                        client_ip=self.session.client_ip,
                        front="h3",
                    )
                else:
                    record = await proxy_exchange(
                        self.ctx,
                        head,
                        st.body,
                        st.sink,
                        client_ip=self.session.client_ip,
                        front="h3",
                    )
            if record is None:
                record = _failed_record(self, head, started_at, 0, "client_reset")
            self.ctx.on_request_done(record)
        finally:
            self.streams.pop(sid, None)
            if not st.body.ended and not st.body.discarded:
                # The response ended before the request body: stop the upload (RFC 9114 §4.1).
                self.stop_reading(sid, ErrorCode.H3_NO_ERROR)
            self.quic.untrack(sid)
            self.h3.forget(sid)
            self.session.kick()

    def _park(self, stream_id: int) -> None:
        h3_stream = self.h3._stream.get(stream_id)
        self.quic.park(stream_id, len(h3_stream.buffer) if h3_stream is not None else 0)

    def _extended_connect_ok(self, head: RequestHead) -> bool:
        """``:protocol`` is well-formed only on a CONNECT with ``:scheme`` and ``:path``, and
        only where SETTINGS_ENABLE_CONNECT_PROTOCOL was announced (RFC 9220 §3, RFC 8441 §4)."""
        return (
            self.connect_protocol
            and head.method == b"CONNECT"
            and bool(head.scheme)
            and bool(head.path)
        )

    def _refusal(self, sid: int, head: RequestHead, protocol: bytes | None) -> HttpError | None:
        """A request this front answers itself: CONNECT (not proxied; of the extended
        CONNECTs only WebSocket is), an unsafe one that came in 0-RTT (425, RFC 8470 §5.2),
        or one for a host another certificate of this listener serves (421, RFC 9110
        §15.5.20)."""
        if sid in self.quic.early_streams and head.method not in _EARLY_DATA_METHODS:
            self.ctx.on_reject("quic_too_early")
            return TooEarly("unsafe method in 0-RTT early data")
        if protocol is not None and not is_websocket_protocol(protocol):
            return NotImplementedMethod(f"extended CONNECT for {protocol!r} is not proxied")
        if head.method == b"CONNECT" and protocol is None:
            return NotImplementedMethod("CONNECT is not proxied")
        names = self.ctx.server_names
        if names is not None and is_misdirected(names, self.certificate, head.authority):
            return MisdirectedRequest("authority served by another certificate")
        return None

    # ---- the stream operations the body and sink use ----

    def consumed(self, stream_id: int, n: int) -> None:
        """The core took ``n`` body bytes: their credit may go back to the client."""
        self.quic.release(stream_id, n)
        self.session.kick()

    def unacked(self, stream_id: int) -> int:
        """Response bytes of ``stream_id`` queued in aioquic and not yet acknowledged."""
        stream = self.quic._streams.get(stream_id)
        return len(stream.sender._buffer) if stream is not None else 0

    def stop_reading(self, stream_id: int, code: int) -> None:
        """STOP_SENDING: the client may stop uploading (its data would be dropped)."""
        try:
            self.quic.stop_stream(stream_id, code)
        except SEND_ERRORS:
            return
        self.quic.untrack(stream_id)
        self.session.kick()

    def reset(self, stream_id: int, code: int) -> None:
        try:
            self.quic.reset_stream(stream_id, code)
        except SEND_ERRORS:
            pass
        self.stop_reading(stream_id, code)

    def refuse(self, stream_id: int) -> None:
        self.ctx.on_reject("h3_request_rejected")
        self.reset(stream_id, ErrorCode.H3_REQUEST_REJECTED)

    def _malformed(self, stream_id: int) -> None:
        self.ctx.on_reject("h3_message_error")
        st = self.streams.get(stream_id)
        if st is not None:
            st.sink.finished = True
            st.body.fail(BadRequest("malformed request stream", kind="h3_message_error"))
            st.scope.cancel()
        self.reset(stream_id, ErrorCode.H3_MESSAGE_ERROR)

    def _section_too_large(self, stream_id: int) -> None:
        """A request whose field section is over SETTINGS_MAX_FIELD_SECTION_SIZE: 431 on its
        stream (RFC 9114 §4.2.2), the rest of the stream unread; the connection serves on."""
        self.ctx.on_reject("h3_field_section_too_large")
        st = self.streams.get(stream_id)
        if st is not None:  # the trailer section of a request being served: the core
            # answers 431 if its response has not begun, else resets the stream
            st.body.fail(HeadersTooLarge("trailer section over the limit"))
            return
        assert self._nursery is not None
        self._nursery.start_soon(self._answer_too_large, stream_id)

    async def _answer_too_large(self, stream_id: int) -> None:
        started_at = trio.current_time()
        sink = H3ResponseSink(self, stream_id, self.stall_s)
        with trio.move_on_after(self.stall_s):
            await sink.send_error(HeadersTooLarge("field section over the limit"))
        self.stop_reading(stream_id, ErrorCode.H3_NO_ERROR)
        self.quic.untrack(stream_id)
        self.session.kick()
        head = RequestHead(b"", b"https", b"", b"", http_version=b"3")
        record = _failed_record(self, head, started_at, 431, HeadersTooLarge.kind)
        self.ctx.on_request_done(record)

    def _goaway(self, stream_id: int) -> None:
        control = self.h3._local_control_stream_id
        if control is None:
            return
        try:
            self.quic.send_stream_data(
                control, encode_frame(FrameType.GOAWAY, encode_uint_var(stream_id))
            )
        except SEND_ERRORS:
            return
        self.session.kick()

    # ---- recycling (max_requests_per_connection) ----

    def _recycle(self, last_sid: int) -> None:
        """The connection took its last request: GOAWAY naming the next stream (later ones
        are refused with H3_REQUEST_REJECTED), close once every response is delivered."""
        self._recycling = True
        self._first_refused = min(self._first_refused, last_sid + 4)
        self._goaway(self._first_refused)
        assert self._nursery is not None
        self._nursery.start_soon(self._close_when_served)

    async def _close_when_served(self) -> None:
        await self._served_and_acknowledged()
        self.session.close()

    async def _served_and_acknowledged(self) -> None:
        """Until every stream has ended and what was sent on them (responses, GOAWAYs) is
        acknowledged: aioquic drops unsent stream data once closed. A client that stops
        acknowledging gets _FLUSH_S after the last stream ended."""
        flush_until: float | None = None
        while True:
            if self.streams:
                flush_until = None
            else:
                if not self._unacked_total():
                    return
                now = trio.current_time()
                if flush_until is None:
                    flush_until = now + _FLUSH_S
                if now >= flush_until:
                    return
            await self.session.wait_progress(_POLL_S)

    def _unacked_total(self) -> int:
        return sum(len(s.sender._buffer) for s in self.quic._streams.values())

    # ---- drain ----

    async def _drain_watch(self) -> None:
        ctx = self.ctx
        await ctx.draining.wait()
        self._goaway(_MAX_REQUEST_STREAM_ID)  # rejects nothing: clients move new requests
        # One round trip for requests already on their way, within the drain budget.
        grace_s = min(1.0, max(0.0, ctx.drain_deadline_at - trio.current_time()))
        await trio.sleep(grace_s)
        self._first_refused = min(self._first_refused, self._highest + 4)  # never raised
        self._goaway(self._first_refused)
        # Close once the streams in progress are served and their last bytes acknowledged,
        # at the latest a moment past the deadline: tunnels say goodbye at the deadline
        # (WebSocket 1001), and CONNECTION_CLOSE would drop what is still unsent.
        with trio.move_on_at(ctx.drain_deadline_at + _DEADLINE_FLUSH_S):
            await self._served_and_acknowledged()
        self.session.close(reason="drain deadline" if self.streams else "")


def _declared_length(headers: HeaderList, ended: bool) -> int | None:
    if ended:
        return 0
    for n, v in headers:
        if n == b"content-length":
            return int(v) if v.isdigit() else None
    return None


def _trailers(headers: HeaderList) -> HeaderList:
    return [(n, v) for n, v in headers if not n.startswith(b":")]


def _failed_record(
    conn: H3ServerConnection, head: RequestHead, started_at: float, status: int, kind: str
) -> RequestRecord:
    return unserved_record(
        conn.ctx.listener, conn.session.client_ip, "h3", head, started_at, status, kind
    )


async def serve_h3_connection(session: QuicSession, ctx: ProxyContext, limits: H3Limits) -> None:
    """Serve one HTTP/3 connection until it terminates; never raises for peer behaviour."""
    await H3ServerConnection(session, ctx, limits).serve()
