"""One multiplexed HTTP/3 connection to a backend: aioquic's sans-IO client driven from trio.

Owns a connected UDP socket, the QUIC and H3 state of one connection (``UpstreamQuic``:
credit extended only as bytes are taken; aioquic's ``H3Connection``), its streams (the HTTP/2
client's ``H2UpstreamStream``: head, buffered DATA, trailers, how each side ended), sending
(HEADERS, DATA while the stream's unacked backlog is small, trailers, RESET_STREAM +
STOP_SENDING) and receiving. Two tasks: the reader feeds datagrams to QUIC; the pump sends
what QUIC has to send and fires its timer (loss recovery, pacing, idle) at ``get_timer()``.

The connection is ready once the handshake completed (the certificate was verified by
aioquic against the backend's ``tls`` table; the peer's MAX_STREAMS is known). A backend H3
GOAWAY (spotted on its control stream: ``gateway/http/h3_upstream.ControlStreamReader``)
fails the streams at or above its id as refused and lets the others finish; a lost
connection fails streams without a response head as ``UpstreamLost`` (the core retries
idempotent ones) and cuts the others. Must never pick a backend, retry, or know the pool's
caps.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any

import trio
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    PingAcknowledged,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)

from gateway.http.errors import BadGateway, HttpError
from gateway.http.h2_upstream import request_trailers
from gateway.http.h3_upstream import (
    H3_REQUEST_CANCELLED,
    SEND_BUFFER_BYTES,
    STREAM_REFUSED,
    STREAM_UNHARMED,
    ControlStreamReader,
    goaway_fate,
    reset_fate,
    stream_room,
)
from gateway.http.model import HeaderList, response_from_pseudo
from workers.http.back import UpstreamLost, UpstreamRefused
from workers.http.h2_upstream_stream import H2UpstreamStream
from workers.http.h3_upstream_quic import UpstreamH3, UpstreamQuic

READ_MAX_BYTES = 65_535
# Datagrams read per wake-up before QUIC's events are handled and the pump runs: one ACK and
# one credit update answer a burst (aioquic acknowledges what it received by then).
READ_BURST = 32
_H3_MESSAGE_ERROR = 0x10E


class H3UpstreamConnection:
    """The client side of one HTTP/3 connection. ``serve`` runs its reader and pump."""

    def __init__(
        self,
        sock: socket.socket,
        config: QuicConfiguration,
        *,
        max_header_bytes: int,
        max_headers: int,
        on_slot_freed: Callable[[H3UpstreamConnection], None],
    ) -> None:
        self.sock = sock
        self.peer: Any = sock.getpeername()
        self.scheme = b"https"
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes
        self.streams: dict[int, H2UpstreamStream] = {}
        self.active = 0
        self.reserved = 0
        self.draining = False
        self.closed = False
        self.ready = trio.Event()  # handshake complete (or the connection failed)
        self.handshake_done = False
        self.idle_since = trio.current_time()
        self.last_received_at = self.idle_since
        self.opened_streams = 0
        self.peak_buffered_bytes = 0
        self._on_slot_freed = on_slot_freed
        self._failure = ""
        self._pump_kick: trio.Event | None = None
        self._cancel_scope = trio.CancelScope()
        self._uni_readers: dict[int, ControlStreamReader] = {}
        self._send_waiters: dict[int, trio.Event] = {}
        self._ping_sent_at: float | None = None
        self._ping_uid = 0
        self._streams_allowed = 0
        self.failure_kind = "connect_failed"  # how a connection that never got ready failed
        self.quic = UpstreamQuic(configuration=config)
        self.h3 = UpstreamH3(self.quic, max_field_section_size=max_header_bytes)
        # Content-Length checks (RFC 9114 §4.1.2): requests whose answer has no content, and
        # per stream the length a response declared and the DATA received so far.
        self._bodiless: set[int] = set()
        self._declared: dict[int, int] = {}
        self._received: dict[int, int] = {}
        self.quic.h3_streams = self.h3._stream

    # --- capacity, as the pool sees it --------------------------------------------------

    @property
    def usable(self) -> bool:
        return not self.closed and not self.draining and self.handshake_done

    def has_room(self) -> bool:
        if not self.usable:
            return False
        room = stream_room(
            self.quic.next_stream_index(),
            self.quic.remote_max_streams_bidi(),
            self.active,
            self.reserved,
        )
        return room > 0

    @property
    def capacity(self) -> int:
        """The backend's stream allowance (0: it lets us open none, a stalled pool; a full
        connection with a non-zero allowance makes the pool open another)."""
        if not self.handshake_done:
            return 0
        return self.quic.remote_max_streams_bidi()

    @property
    def idle(self) -> bool:
        return self.active == 0 and self.reserved == 0

    @property
    def buffered_bytes(self) -> int:
        return self.quic.unread_total

    # --- running ------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Handshake, read and pump until the connection ends; every stream left then fails."""
        try:
            with self._cancel_scope:
                self.quic.connect(self.peer, now=trio.current_time())
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump_forever)
                    task_status.started()
                    await self._read_forever()
                    nursery.cancel_scope.cancel()
        finally:
            self._lost(self.failure or "upstream connection closed")
            self.sock.close()

    def close(self, reason: str = "closed by the pool") -> None:
        """End the connection now, without a word to the backend; streams left fail."""
        if not self.closed:
            self._failure = self._failure or reason
            self.draining = True
            self._cancel_scope.cancel()

    def close_gracefully(self) -> None:
        """CONNECTION_CLOSE(H3_NO_ERROR) to the backend; the pump ends once it is sent."""
        if self.closed or self.draining:
            return
        self.draining = True
        self._failure = "closed idle"
        self.quic.close(error_code=0x100, reason_phrase="idle")
        self._kick()

    def keepalive(self, now: float, interval_s: float, timeout_s: float) -> None:
        """PING a connection quiet for ``interval_s``; close it when the ACK is late."""
        if self.closed or self.draining:
            return
        if self._ping_sent_at is not None:
            if now - self._ping_sent_at >= timeout_s:
                self.close(f"no PING ACK within {timeout_s:.1f}s")
            return
        if now - self.last_received_at >= interval_s:
            self._ping_uid += 1
            self.quic.send_ping(self._ping_uid)
            self._ping_sent_at = now
            self._kick()

    async def _read_forever(self) -> None:
        sock = self.sock
        quic = self.quic
        peer = self.peer
        while True:
            await trio.lowlevel.wait_readable(sock)
            now = trio.current_time()
            for _ in range(READ_BURST):
                try:
                    data = sock.recv(READ_MAX_BYTES)
                except BlockingIOError:
                    break
                except OSError as exc:
                    # A connected UDP socket reports a dead backend's ICMP port unreachable.
                    name = errno.errorcode.get(exc.errno or 0, "")
                    self._failure = f"upstream {name or 'socket'}: {exc.strerror or exc}"
                    self.failure_kind = "refused" if exc.errno == errno.ECONNREFUSED else "connect"
                    return
                quic.receive_datagram(data, peer, now=now)
            self.last_received_at = now
            self._process_events()
            allowed = self.quic.remote_max_streams_bidi()
            if allowed != self._streams_allowed:
                # MAX_STREAMS raised the backend's allowance (no aioquic event says so): an
                # exchange waiting for a slot may take one here.
                self._streams_allowed = allowed
                self._on_slot_freed(self)
            self._wake_senders()
            self._kick()
            if self.quic._close_event is not None:
                self.draining = True  # the pump ends once nothing is left to send

    async def _pump_forever(self) -> None:
        sock = self.sock
        quic = self.quic
        while True:
            now = trio.current_time()
            timer = quic.get_timer()
            if timer is not None and timer <= now:
                quic.handle_timer(now=now)
                self._process_events()
            datagrams = quic.datagrams_to_send(now=now)
            for data, _addr in datagrams:
                while True:
                    try:
                        sock.send(data)
                        break
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(sock)
                    except OSError as exc:
                        self._failure = self._failure or f"upstream send: {exc.strerror or exc}"
                        if exc.errno == errno.ECONNREFUSED:
                            self.failure_kind = "refused"
                        self._cancel_scope.cancel()
                        return
            if self._ended():
                self._cancel_scope.cancel()
                return
            if datagrams:
                await trio.lowlevel.checkpoint()
                continue
            self._pump_kick = trio.Event()
            timer = quic.get_timer()
            if timer is None:
                await self._pump_kick.wait()
            else:
                with trio.move_on_at(timer):
                    await self._pump_kick.wait()

    def _ended(self) -> bool:
        """QUIC is closing and has nothing left to send: our CONNECTION_CLOSE went out, the
        peer's arrived (RFC 9000 §10.2.2: we send nothing more), or the idle timer fired."""
        return self.quic._close_event is not None and not self.quic._close_pending

    @property
    def failure(self) -> str:
        event = self.quic._close_event
        if event is not None and not self.handshake_done and 0x100 <= event.error_code <= 0x1FF:
            self.failure_kind = "tls_handshake"  # CRYPTO_ERROR: a TLS alert (RFC 9001 §4.8)
        if self._failure or event is None:
            return self._failure
        phrase = f": {event.reason_phrase}" if event.reason_phrase else ""
        return f"QUIC connection closed (code {event.error_code:#x}{phrase})"

    def _kick(self) -> None:
        if self._pump_kick is not None:
            self._pump_kick.set()
            self._pump_kick = None

    def _wake_senders(self) -> None:
        if self._send_waiters:
            for waiter in self._send_waiters.values():
                waiter.set()
            self._send_waiters.clear()

    # --- events from the backend --------------------------------------------------------

    def _process_events(self) -> None:
        quic = self.quic
        while True:
            event = quic.next_event()
            if event is None:
                return
            self._on_quic_event(event)

    def _on_quic_event(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            stream_id = event.stream_id
            if stream_id % 4 == 3:  # server-initiated unidirectional: control, QPACK
                reader = self._uni_readers.get(stream_id)
                if reader is None:
                    reader = self._uni_readers[stream_id] = ControlStreamReader()
                if reader.feed(event.data):
                    self._on_goaway(reader.goaway_id)
            for h3_event in self.h3.handle_event(event):
                self._on_h3_event(h3_event)
            if self.h3.too_large:
                for sid in self.h3.too_large:
                    self._section_too_large(sid)
                self.h3.too_large.clear()
        elif isinstance(event, StreamReset):
            self.h3._dead.discard(event.stream_id)  # nothing more comes on it
            self.h3.handle_event(event)
            self._on_reset(event.stream_id, event.error_code)
        elif isinstance(event, StopSendingReceived):
            self.h3.handle_event(event)
            stream = self.streams.get(event.stream_id)
            if stream is not None and not stream.local_ended:
                # The backend will read no more of the upload (RFC 9114 §4.1.1: it may
                # still answer); QUIC resets our sending side.
                stream.local_ended = True
                stream.wake_window()
                self._maybe_free(stream)
        elif isinstance(event, HandshakeCompleted):
            self.handshake_done = True
            self.ready.set()
            self._on_slot_freed(self)
        elif isinstance(event, ConnectionTerminated):
            if not self.handshake_done and 0x100 <= event.error_code <= 0x1FF:
                self.failure_kind = "tls_handshake"  # CRYPTO_ERROR: a TLS alert (RFC 9001 §4.8)
            self.draining = True
            self._cancel_scope.cancel()
        elif isinstance(event, PingAcknowledged):
            self._ping_sent_at = None

    def _on_h3_event(self, event: Any) -> None:
        if isinstance(event, DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None or stream.error is not None:
                return  # released or failed: nobody takes it (credit counts it consumed)
            data = event.data
            if data and stream.id in self._declared:
                got = self._received[stream.id] = self._received.get(stream.id, 0) + len(data)
                if got > self._declared[stream.id]:
                    self._length_mismatch(stream)
                    return
            if data:
                stream.chunks.append(data)
                stream.buffered_bytes += len(data)
                self.quic.add_unread(stream.id, len(data))
                if self.quic.unread_total > self.peak_buffered_bytes:
                    self.peak_buffered_bytes = self.quic.unread_total
            if event.stream_ended:
                if self._received.get(stream.id, 0) != self._declared.get(stream.id, 0):
                    self._length_mismatch(stream)
                    return
                stream.remote_ended = True
                self._maybe_free(stream)
            stream.wake()
        elif isinstance(event, HeadersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None:
                return
            if stream.head is None:
                self._on_head(stream, event.headers)
            elif len(event.headers) > self.max_headers:
                self._refuse_head(stream, "trailers")
            else:
                stream.trailers = list(event.headers)
            if event.stream_ended and stream.error is None:
                if self._received.get(stream.id, 0) != self._declared.get(stream.id, 0):
                    self._length_mismatch(stream)
                    return
                stream.remote_ended = True
                self._maybe_free(stream)
            stream.wake()

    def _length_mismatch(self, stream: H2UpstreamStream) -> None:
        declared = self._declared.get(stream.id, 0)
        self.reset_stream(stream, _H3_MESSAGE_ERROR)
        stream.fail(
            BadGateway(
                f"response body does not match its content-length {declared}",
                kind="upstream_truncated",
            )
        )

    def _on_head(self, stream: H2UpstreamStream, headers: list[tuple[bytes, bytes]]) -> None:
        if len(headers) > self.max_headers:
            self._refuse_head(stream, "response head")
            return
        if sum(len(n) + len(v) + 32 for n, v in headers) > self.max_header_bytes:
            self._refuse_head(stream, "response head", by_size=True)
            return
        try:
            head = response_from_pseudo(list(headers), b"3")
        except HttpError as exc:
            self.reset_stream(stream, _H3_MESSAGE_ERROR)
            stream.fail(exc)
            return
        if head.status < 200:
            return  # interim (1xx): the final head follows (RFC 9114 §4.1)
        stream.head = head
        declared: int | None = None
        for name, value in head.headers:
            if name == b"content-length":
                declared = int(value) if value.isdigit() else None
                break
        if (
            declared is not None
            and stream.id not in self._bodiless
            and head.status not in (204, 304)
        ):
            self._declared[stream.id] = declared

    def _section_too_large(self, stream_id: int) -> None:
        """A field section over our SETTINGS_MAX_FIELD_SECTION_SIZE, refused undecoded."""
        stream = self.streams.get(stream_id)
        if stream is not None and stream.error is None:
            what = "response head" if stream.head is None else "trailers"
            self._refuse_head(stream, what, by_size=True)

    def _refuse_head(self, stream: H2UpstreamStream, what: str, *, by_size: bool = False) -> None:
        self.reset_stream(stream, _H3_MESSAGE_ERROR)
        limit = f"{self.max_header_bytes} bytes" if by_size else f"{self.max_headers} fields"
        stream.fail(BadGateway(f"{what} has more than {limit}", kind="upstream_headers_too_large"))

    def _on_reset(self, stream_id: int, error_code: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        stream.reset = True
        fate = reset_fate(error_code, response_complete=stream.remote_ended)
        if fate == STREAM_REFUSED and stream.head is None:
            stream.fail(UpstreamRefused(f"stream rejected by the backend (code {error_code:#x})"))
        elif fate != STREAM_UNHARMED:
            stream.fail(
                BadGateway(
                    f"backend reset the stream (code {error_code:#x})", kind="upstream_reset"
                )
            )
        stream.wake()
        self._maybe_free(stream)

    def _on_goaway(self, goaway_id: int) -> None:
        self.draining = True
        for stream in list(self.streams.values()):
            if goaway_fate(stream.id, goaway_id) == STREAM_REFUSED and not stream.finished:
                stream.reset = True
                if stream.head is None:
                    stream.fail(
                        UpstreamRefused(
                            "backend GOAWAY: stream not processed", kind="upstream_goaway"
                        )
                    )
                else:
                    stream.fail(BadGateway("backend GOAWAY mid-body", kind="upstream_reset"))
                self._maybe_free(stream)
        self._on_slot_freed(self)
        if self.idle:
            self.close_gracefully_after_goaway()

    def close_gracefully_after_goaway(self) -> None:
        self._failure = self._failure or "drained after GOAWAY"
        self.quic.close(error_code=0x100, reason_phrase="")
        self._kick()

    # --- the exchange's side ------------------------------------------------------------

    def open_stream(self, headers: HeaderList, *, end_stream: bool) -> H2UpstreamStream:
        """Send HEADERS on a new request stream; the caller reserved a slot with the pool."""
        self.reserved -= 1
        if not self.usable:
            self._on_slot_freed(self)
            raise UpstreamRefused("connection stopped taking streams")
        stream_id = self.quic.get_next_available_stream_id()
        self.h3.send_headers(stream_id, headers, end_stream=end_stream)
        if headers[0][1] == b"HEAD":
            self._bodiless.add(stream_id)
        stream = H2UpstreamStream(self, stream_id)  # type: ignore[arg-type]
        self.streams[stream_id] = stream
        self.active += 1
        self.opened_streams += 1
        stream.local_ended = end_stream
        self._kick()
        return stream

    async def send_data(self, stream: H2UpstreamStream, data: bytes) -> bool:
        """Queue ``data`` once the stream's unacked backlog is small; False: the stream ended
        (stop uploading)."""
        while True:
            if stream.local_ended or stream.reset or stream.error is not None or self.closed:
                return False
            if self.quic.send_backlog(stream.id) < SEND_BUFFER_BYTES:
                break
            waiter = self._send_waiters.get(stream.id)
            if waiter is None:
                waiter = self._send_waiters[stream.id] = trio.Event()
            await waiter.wait()
        self.h3.send_data(stream.id, data, end_stream=False)
        self._kick()
        await trio.lowlevel.checkpoint()
        return True

    async def end_stream(self, stream: H2UpstreamStream, trailers: HeaderList) -> None:
        if stream.local_ended or stream.reset or stream.error is not None or self.closed:
            return
        trailers = request_trailers(trailers)
        if trailers:
            self.h3.send_headers(stream.id, trailers, end_stream=True)
        else:
            self.h3.send_data(stream.id, b"", end_stream=True)
        stream.local_ended = True
        self._maybe_free(stream)
        self._kick()
        await trio.lowlevel.checkpoint()

    def reset_stream(self, stream: H2UpstreamStream, code: int = H3_REQUEST_CANCELLED) -> None:
        """RESET_STREAM and STOP_SENDING ``code`` unless the stream is done; never the
        connection."""
        if not stream.finished and not self.closed:
            try:
                if not stream.local_ended:
                    self.quic.reset_stream(stream.id, code)
                if not stream.remote_ended:
                    self.quic.stop_stream(stream.id, code)
            except ValueError:
                pass  # discarded already: nothing to reset
            self._kick()
        stream.reset = True
        self._maybe_free(stream)

    def acknowledge(self, stream: H2UpstreamStream, size: int) -> None:
        """The consumer took ``size`` bytes: credit may move (sent with the next packet)."""
        self.quic.take_unread(stream.id, size)
        if not self.closed:
            self._kick()

    def forget(self, stream: H2UpstreamStream) -> None:
        """The exchange is done with ``stream``: unread bytes count as consumed."""
        if stream.buffered_bytes:
            size = stream.buffered_bytes
            stream.chunks.clear()
            stream.buffered_bytes = 0
            self.acknowledge(stream, size)
        self.streams.pop(stream.id, None)
        self._bodiless.discard(stream.id)
        self._declared.pop(stream.id, None)
        self._received.pop(stream.id, None)
        waiter = self._send_waiters.pop(stream.id, None)
        if waiter is not None:
            waiter.set()
        if not stream.finished:
            self.reset_stream(stream)
        self._maybe_free(stream)
        if self.draining and self.idle and not self.closed:
            self.close_gracefully_after_goaway()

    def _maybe_free(self, stream: H2UpstreamStream) -> None:
        if stream.slot_held and stream.finished:
            stream.slot_held = False
            self.active -= 1
            if self.idle:
                self.idle_since = trio.current_time()
            self._on_slot_freed(self)

    def _lost(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.draining = True
        for stream in list(self.streams.values()):
            if stream.remote_ended and stream.error is None:
                continue  # complete: its consumer may still read what is buffered
            if stream.head is not None:
                stream.fail(BadGateway(f"{reason} mid-body", kind="upstream_truncated"))
            elif not self.handshake_done:
                stream.fail(UpstreamRefused(reason, kind="connect_failed"))
            else:
                stream.fail(UpstreamLost(reason))
        for stream in list(self.streams.values()):
            stream.reset = True
            stream.wake()
            self._maybe_free(stream)
        self._wake_senders()
        self.ready.set()  # wake anyone waiting for the handshake: the connection is gone
        self._on_slot_freed(self)
