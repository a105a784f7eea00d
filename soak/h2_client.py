"""An HTTP/2 client (prior knowledge, h2 over trio) shared by several load tasks: the soak's H2
peer.

Owns one connection at a time to one address, many streams on it from concurrent tasks.
Whichever task waits reads for all (the events of other streams are kept for them). A GOAWAY
from the gateway (a reload or drain) lets the streams it covers finish — h2's own client
state machine would drop them (python-hyper/h2#1181), so the connection is the HTTP/2 back
adapter's GOAWAY-tolerant one — and new requests go to a fresh connection. A stream the
gateway did not process (REFUSED_STREAM, or above the GOAWAY's last stream) is retried once
on a fresh connection, as browsers do; the retry is counted, not hidden. Must never retry a
stream that got any answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h2.errors
import h2.events
import h2.exceptions
import trio

from soak.client_errors import ClientError, classify
from soak.recorder import Recorder
from workers.http.h2_upstream_protocol import UpstreamH2, new_upstream_h2

_MAX_HEADER_BYTES = 65_536
_REFUSED = h2.errors.ErrorCodes.REFUSED_STREAM


class _Refused(Exception):
    """The gateway did not process the stream: safe to send again."""


@dataclass
class _Stream:
    status: int = 0
    body_bytes: int = 0
    body_head: bytes = b""
    ended: bool = False
    reset_code: int | None = None


@dataclass
class _Connection:
    stream: trio.SocketStream
    h2: UpstreamH2
    streams: dict[int, _Stream] = field(default_factory=dict)
    read_lock: trio.Lock = field(default_factory=trio.Lock)
    send_lock: trio.Lock = field(default_factory=trio.Lock)
    goaway_last: int | None = None  # the last stream a GOAWAY lets finish
    dead: bool = False

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            async with self.send_lock:
                await self.stream.send_all(data)

    def dispatch(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", 0)
        st = self.streams.get(sid)
        if isinstance(event, h2.events.ConnectionTerminated):
            self.goaway_last = event.last_stream_id
            for other_sid, other in self.streams.items():
                if other_sid > event.last_stream_id and not other.ended:
                    other.ended, other.reset_code = True, _REFUSED
        elif st is None:
            return
        elif isinstance(event, h2.events.ResponseReceived):
            st.status = int(dict(event.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            if len(st.body_head) < 64:
                st.body_head += event.data[: 64 - len(st.body_head)]
            st.body_bytes += len(event.data)
            self.h2.acknowledge_received_data(event.flow_controlled_length, sid)
        elif isinstance(event, h2.events.StreamEnded):
            st.ended = True
        elif isinstance(event, h2.events.StreamReset):
            st.ended, st.reset_code = True, event.error_code

    async def wait(self, sid: int) -> _Stream:
        st = self.streams[sid]
        while not st.ended:
            async with self.read_lock:
                if st.ended:
                    break
                data = await self.stream.receive_some(65_536)
                if not data:
                    self.dead = True
                    raise ClientError("eof_early", "the gateway closed the connection")
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    self.dead = True
                    raise ClientError("protocol", str(exc)) from None
                for event in events:
                    self.dispatch(event)
                await self.flush()
        del self.streams[sid]
        if st.reset_code == _REFUSED:
            raise _Refused()
        if st.reset_code is not None:
            raise ClientError("reset", f"stream reset with code {st.reset_code}")
        return st


class H2Client:
    def __init__(self, host: str, port: int, recorder: Recorder, timeout_s: float = 10.0):
        self.host, self.port, self.recorder, self.timeout_s = host, port, recorder, timeout_s
        self.conn: _Connection | None = None
        self._connecting = trio.Lock()

    async def aclose(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            await conn.stream.aclose()

    async def _usable(self) -> _Connection:
        async with self._connecting:
            conn = self.conn
            if conn is None or conn.dead or conn.goaway_last is not None:
                try:
                    stream = await trio.open_tcp_stream(self.host, self.port)
                except OSError as exc:
                    raise ClientError(classify(exc, connecting=True), str(exc))
                conn = self.conn = _Connection(stream, new_upstream_h2(_MAX_HEADER_BYTES))
                await conn.flush()
            return conn

    async def get(self, path: str) -> _Stream:
        with trio.fail_after(self.timeout_s):
            try:
                return await self._get_once(path)
            except _Refused:
                self.recorder.note("h2_refused_retried")
            try:
                return await self._get_once(path)
            except _Refused:
                raise ClientError("h2_refused", "refused twice") from None

    async def _get_once(self, path: str) -> _Stream:
        conn = await self._usable()
        sid = conn.h2.get_next_available_stream_id()
        conn.streams[sid] = _Stream()
        conn.h2.send_headers(
            sid,
            [
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", f"{self.host}:{self.port}".encode()),
                (b":path", path.encode()),
            ],
            end_stream=True,
        )
        try:
            await conn.flush()
        except (OSError, trio.BrokenResourceError):
            conn.dead = True
            raise
        return await conn.wait(sid)
