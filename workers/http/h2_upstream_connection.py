"""One multiplexed HTTP/2 connection to a backend: h2's state, one reader and one writer task.

Owns the h2 client state of one connection, its streams (``H2UpstreamStream``: response
head, buffered DATA bounded by our windows, trailers, the way it ended), sending (HEADERS,
DATA within the peer's windows, trailers, RST_STREAM) and receiving. The reader never waits
for a consumer: DATA goes into the stream's buffer, acknowledged to the backend (h2
``acknowledge_received_data``) only as the consumer takes it, so buffering is bounded by the
windows in ``gateway/http/h2_upstream``. The writer is the only task that writes the socket;
a sender waits until its bytes were written, which bounds what h2 queues.

A backend GOAWAY fails the streams above its last-stream-id as refused and lets the others
finish (h2 needs a patch for that: ``h2_upstream_protocol``); the connection then takes no
new stream and ends once empty. Must never pick a backend, retry, or know the pool's caps.
"""

from __future__ import annotations

from collections.abc import Callable

import h2.events
import h2.exceptions
import trio

from gateway.http.errors import BadGateway, HttpError
from gateway.http.h2_upstream import (
    CANCEL,
    KEEPALIVE_CLOSE,
    KEEPALIVE_PING,
    LAST_USABLE_STREAM_ID,
    STREAM_REFUSED,
    STREAM_UNHARMED,
    goaway_fate,
    keepalive_action,
    request_trailers,
    reset_fate,
    stream_capacity,
)
from gateway.http.model import HeaderList, response_from_pseudo
from workers.http import h2_repr_patch  # noqa: F401  (a cheaper frame repr, see there)
from workers.http.back import UpstreamLost, UpstreamRefused
from workers.http.h2_upstream_protocol import new_upstream_h2
from workers.http.h2_upstream_stream import H2UpstreamStream

READ_MAX_BYTES = 64 * 1024
_PROTOCOL_ERROR = 0x1
_PING_PAYLOAD = b"egw-kalv"  # 8 bytes (RFC 9113 §6.7); the backend echoes it in its ACK


class H2UpstreamConnection:
    """The client side of one HTTP/2 connection. ``serve`` runs its reader and writer."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        scheme: bytes,
        max_header_bytes: int,
        max_headers: int,
        on_slot_freed: Callable[[H2UpstreamConnection], None],
    ) -> None:
        self.stream = stream
        self.scheme = scheme
        self.max_headers = max_headers
        self.streams: dict[int, H2UpstreamStream] = {}
        self.active = 0  # streams holding a concurrency slot
        self.reserved = 0  # slots promised to exchanges that have not opened their stream yet
        self.draining = False  # a GOAWAY arrived (or we are closing): no new streams
        self.closed = False
        self.ready = trio.Event()  # the backend's SETTINGS arrived: its caps are known
        self.idle_since = trio.current_time()
        self.buffered_bytes = 0  # DATA received and not yet taken, all streams
        self.peak_buffered_bytes = 0
        self._on_slot_freed = on_slot_freed
        self._failure = ""
        self._queued_seq = 0
        self._sent_seq = 0
        self._writer_kick: trio.Event | None = None
        self._sent_waiters: list[trio.Event] = []
        self._cancel_scope = trio.CancelScope()
        self._close_after_flush = False
        self.last_received_at = self.idle_since
        self._ping_sent_at: float | None = None
        self.pings_acked = 0
        self.h2 = new_upstream_h2(max_header_bytes)

    # --- capacity, as the pool sees it --------------------------------------------------

    @property
    def capacity(self) -> int:
        if not self.ready.is_set():
            return 0
        return stream_capacity(self.h2.remote_settings.max_concurrent_streams)

    @property
    def usable(self) -> bool:
        return (
            not self.closed
            and not self.draining
            and self.h2.highest_outbound_stream_id < LAST_USABLE_STREAM_ID
        )

    def has_room(self) -> bool:
        return self.usable and self.active + self.reserved < self.capacity

    @property
    def idle(self) -> bool:
        return self.active == 0 and self.reserved == 0

    # --- running ------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read and write until the connection ends; every stream left then fails."""
        try:
            with self._cancel_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_forever)
                    task_status.started()
                    await self._read_forever()
                    nursery.cancel_scope.cancel()
        finally:
            self._lost(self._failure or "upstream connection closed")
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1):
                    await self.stream.aclose()

    def close(self, reason: str = "closed by the pool") -> None:
        """End the connection now (pending bytes are dropped); streams left fail."""
        if not self.closed:
            self._failure = self._failure or reason
            self.draining = True
            self._cancel_scope.cancel()

    def close_gracefully(self) -> None:
        """Send GOAWAY(NO_ERROR) and close once it is written (an idle connection)."""
        if self.closed or self.draining:
            return
        self.draining = True
        try:
            self.h2.close_connection()
        except h2.exceptions.ProtocolError:
            pass
        self._kick_writer()
        self._failure = "closed idle"
        self._close_after_flush = True

    def keepalive(self, now: float, interval_s: float, timeout_s: float) -> None:
        """PING a connection quiet for ``interval_s``; close it when the ACK is late."""
        if self.closed or self._close_after_flush:
            return
        action = keepalive_action(
            now, self.last_received_at, self._ping_sent_at, interval_s, timeout_s
        )
        if action == KEEPALIVE_PING:
            try:
                self.h2.ping(_PING_PAYLOAD)
            except h2.exceptions.ProtocolError:
                return  # h2 already closed the connection: the reader is ending it
            self._ping_sent_at = now
            self._kick_writer()
        elif action == KEEPALIVE_CLOSE:
            self.close(f"no PING ACK within {timeout_s:.1f}s")

    async def _read_forever(self) -> None:
        while True:
            try:
                data = await self.stream.receive_some(READ_MAX_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._failure = f"upstream read: {exc}"
                return
            if not data:
                self._failure = "upstream closed the connection"
                return
            self.last_received_at = trio.current_time()
            try:
                events = self.h2.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                # h2 queued a GOAWAY with the error's code; the writer sends it.
                self.draining = True
                self._failure = f"upstream protocol error: {exc}"
                self._kick_writer()
                self._fail_all(BadGateway(self._failure, kind="upstream_protocol"))
                await self._flush_then_stop()
                return
            for event in events:
                self._dispatch(event)
            self._kick_writer()
            if self.draining and self.idle:
                await self._flush_then_stop()
                return

    async def _flush_then_stop(self) -> None:
        with trio.move_on_after(1):
            await self._wait_written(self._queued_seq_bump())

    async def _write_forever(self) -> None:
        while True:
            seq = self._queued_seq
            data = self.h2.data_to_send()
            if data:
                try:
                    await self.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self._failure = self._failure or f"upstream write: {exc}"
                    self._cancel_scope.cancel()
                    return
            self._sent_seq = seq
            for waiter in self._sent_waiters:
                waiter.set()
            self._sent_waiters.clear()
            if data:
                continue
            if self._close_after_flush:
                self._cancel_scope.cancel()
                return
            self._writer_kick = trio.Event()
            await self._writer_kick.wait()

    def _kick_writer(self) -> None:
        if self._writer_kick is not None:
            self._writer_kick.set()
            self._writer_kick = None

    def _queued_seq_bump(self) -> int:
        self._queued_seq += 1
        self._kick_writer()
        return self._queued_seq

    async def _wait_written(self, seq: int) -> None:
        while self._sent_seq < seq and not self.closed:
            waiter = trio.Event()
            self._sent_waiters.append(waiter)
            await waiter.wait()

    # --- events from the backend --------------------------------------------------------

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            self._on_data(event)
        elif isinstance(event, h2.events.ResponseReceived):
            self._on_response(event.stream_id, event.headers)
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                if len(event.headers) > self.max_headers:
                    self._refuse_head(stream, "trailers")
                else:
                    stream.trailers = list(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.remote_ended = True
                stream.wake()
                self._maybe_free(stream)
        elif isinstance(event, h2.events.StreamReset):
            self._on_reset(event.stream_id, int(event.error_code))
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id == 0:
                for stream in self.streams.values():
                    stream.wake_window()
            else:
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.wake_window()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for stream in self.streams.values():
                stream.wake_window()  # the initial window may have grown
            if not self.ready.is_set():
                self.ready.set()
            self._on_slot_freed(self)  # the concurrency cap may have changed
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(event.last_stream_id or 0)
        elif isinstance(event, h2.events.PingAckReceived) and event.ping_data == _PING_PAYLOAD:
            self._ping_sent_at = None
            self.pings_acked += 1
        # 1xx (InformationalResponseReceived), the backend's PINGs (h2 answers), SETTINGS acks, unknown
        # frames: nothing to do.

    def _on_response(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if len(headers) > self.max_headers:
            self._refuse_head(stream, "response head")
            return
        try:
            stream.head = response_from_pseudo(list(headers), b"2")
        except HttpError as exc:
            self.reset_stream(stream, _PROTOCOL_ERROR)
            stream.fail(exc)
            return
        stream.wake()

    def _refuse_head(self, stream: H2UpstreamStream, what: str) -> None:
        # h2 bounds a header list's bytes (our SETTINGS_MAX_HEADER_LIST_SIZE), not its count.
        self.reset_stream(stream, _PROTOCOL_ERROR)
        stream.fail(
            BadGateway(
                f"{what} has more than {self.max_headers} fields",
                kind="upstream_headers_too_large",
            )
        )

    def _on_data(self, event: h2.events.DataReceived) -> None:
        stream = self.streams.get(event.stream_id)
        data = event.data
        padding = event.flow_controlled_length - len(data)
        if stream is None or stream.error is not None:
            # Released or failed: nobody will take it; hand the window straight back.
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            return
        if padding:
            self.h2.acknowledge_received_data(padding, event.stream_id)
        if data:
            stream.chunks.append(data)
            stream.buffered_bytes += len(data)
            self.buffered_bytes += len(data)
            if self.buffered_bytes > self.peak_buffered_bytes:
                self.peak_buffered_bytes = self.buffered_bytes
            stream.wake()

    def _on_reset(self, stream_id: int, error_code: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        stream.reset = True
        fate = reset_fate(error_code, response_complete=stream.remote_ended)
        if fate == STREAM_REFUSED and stream.head is None:
            stream.fail(UpstreamRefused(f"stream refused by the backend (code {error_code})"))
        elif fate != STREAM_UNHARMED:
            stream.fail(
                BadGateway(f"backend reset the stream (code {error_code})", kind="upstream_reset")
            )
        stream.wake()
        self._maybe_free(stream)

    def _on_goaway(self, last_stream_id: int) -> None:
        self.draining = True
        for stream in list(self.streams.values()):
            if goaway_fate(stream.id, last_stream_id) == STREAM_REFUSED and not stream.finished:
                stream.reset = True  # the backend will never answer it: nothing to reset
                if stream.head is None:
                    stream.fail(
                        UpstreamRefused(
                            "backend GOAWAY: stream not processed", kind="upstream_goaway"
                        )
                    )
                else:  # a later GOAWAY that lowers the bound past a stream it answered
                    stream.fail(BadGateway("backend GOAWAY mid-body", kind="upstream_reset"))
                self._maybe_free(stream)
        self._on_slot_freed(self)

    # --- the exchange's side ------------------------------------------------------------

    def open_stream(self, headers: HeaderList, *, end_stream: bool) -> H2UpstreamStream:
        """Send HEADERS on a new stream; the caller reserved a slot with the pool."""
        self.reserved -= 1
        if not self.usable:
            self._on_slot_freed(self)
            raise UpstreamRefused("connection stopped taking streams")
        try:
            stream_id = self.h2.get_next_available_stream_id()
            self.h2.send_headers(stream_id, headers, end_stream=end_stream)
        except h2.exceptions.ProtocolError:
            # Nothing was sent, but h2 validates while it encodes: the HPACK encoder may hold
            # entries the backend never saw. No new stream here; the connection ends once
            # the streams in flight are done.
            self.draining = True
            self._on_slot_freed(self)
            raise
        stream = H2UpstreamStream(self, stream_id)
        self.streams[stream_id] = stream
        self.active += 1
        stream.local_ended = end_stream
        self._kick_writer()
        return stream

    def release_reservation(self) -> None:
        """Give back the slot the pool reserved, no stream opened (the caller chose not to)."""
        self.reserved -= 1
        self._on_slot_freed(self)

    async def send_data(self, stream: H2UpstreamStream, data: bytes) -> bool:
        """Send ``data`` within the peer's windows; False: the stream ended (stop uploading)."""
        view = memoryview(data)
        while view:
            if stream.finished or stream.error is not None or self.closed:
                return False
            window = min(
                self.h2.local_flow_control_window(stream.id), self.h2.max_outbound_frame_size
            )
            if window <= 0:
                await stream.wait_window()
                continue
            piece = bytes(view[:window])
            view = view[len(piece) :]
            self.h2.send_data(stream.id, piece)
            await self._wait_written(self._queued_seq_bump())
        return True

    async def end_stream(self, stream: H2UpstreamStream, trailers: HeaderList) -> None:
        if stream.finished or stream.error is not None or self.closed:
            return
        trailers = request_trailers(trailers)
        if trailers:
            try:
                self.h2.send_headers(stream.id, trailers, end_stream=True)
            except h2.exceptions.ProtocolError:
                self.draining = True  # see open_stream: the HPACK encoder is suspect
                raise
        else:
            self.h2.end_stream(stream.id)
        stream.local_ended = True
        self._maybe_free(stream)
        await self._wait_written(self._queued_seq_bump())

    def reset_stream(self, stream: H2UpstreamStream, code: int = CANCEL) -> None:
        """RST_STREAM ``code`` unless the stream is already closed; never the connection."""
        if not stream.finished and not self.closed:
            try:
                self.h2.reset_stream(stream.id, error_code=code)
            except h2.exceptions.ProtocolError:
                pass  # closed already, or the connection failed: nothing to reset
            self._kick_writer()
        stream.reset = True
        self._maybe_free(stream)

    def acknowledge(self, stream: H2UpstreamStream, size: int) -> None:
        self.buffered_bytes -= size
        if not self.closed:
            self.h2.acknowledge_received_data(size, stream.id)
            self._kick_writer()

    def forget(self, stream: H2UpstreamStream) -> None:
        """The exchange is done with ``stream``: unread bytes go back to the window."""
        if stream.buffered_bytes:
            size = stream.buffered_bytes
            stream.chunks.clear()
            stream.buffered_bytes = 0
            self.acknowledge(stream, size)
        self.streams.pop(stream.id, None)
        if not stream.finished:
            self.reset_stream(stream)
        self._maybe_free(stream)
        if self.draining and self.idle and not self.closed:
            self.close("drained after GOAWAY")

    def _maybe_free(self, stream: H2UpstreamStream) -> None:
        if stream.slot_held and stream.finished:
            stream.slot_held = False
            self.active -= 1
            if self.idle:
                self.idle_since = trio.current_time()
            self._on_slot_freed(self)

    def _fail_all(self, error: HttpError) -> None:
        for stream in list(self.streams.values()):
            if stream.remote_ended and stream.error is None:
                continue  # complete: its consumer may still read what is buffered
            if stream.head is not None:
                stream.fail(BadGateway(f"{error.detail} mid-body", kind="upstream_truncated"))
            else:
                stream.fail(error)

    def _lost(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.draining = True
        self._fail_all(UpstreamLost(reason))
        for stream in list(self.streams.values()):
            stream.reset = True
            stream.wake()  # an upload waiting for a window stops
            self._maybe_free(stream)
        for waiter in self._sent_waiters:
            waiter.set()
        self._sent_waiters.clear()
        self.ready.set()  # wake anyone waiting for SETTINGS: the connection is gone
        self._on_slot_freed(self)
