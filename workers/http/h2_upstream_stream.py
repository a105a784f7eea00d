"""One request/response on a multiplexed upstream HTTP/2 connection.

Owns a stream's state as the connection's reader and the exchange share it: the response
head, the DATA received and not yet taken (bounded by our stream window), trailers, how each
side ended, the error that ended it otherwise, and the one-waiter-per-kind waits (head, data,
window). Taking a chunk acknowledges it to the connection, which is what lets the backend
send more. Must never read or write the socket.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

import trio

from gateway.http.errors import HttpError
from gateway.http.limits import BODY_CHUNK_MAX_BYTES
from gateway.http.model import HeaderList, ResponseHead

if TYPE_CHECKING:
    from workers.http.h2_upstream_connection import H2UpstreamConnection


class H2UpstreamStream:
    """One request/response on an upstream connection, as the reader and the exchange see it."""

    __slots__ = (
        "_data_waiter",
        "_head_waiter",
        "_window_waiter",
        "buffered_bytes",
        "chunks",
        "conn",
        "error",
        "head",
        "id",
        "local_ended",
        "remote_ended",
        "reset",
        "slot_held",
        "trailers",
    )

    def __init__(self, conn: H2UpstreamConnection, stream_id: int) -> None:
        self.conn = conn
        self.id = stream_id
        self.head: ResponseHead | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered_bytes = 0
        self.trailers: HeaderList = []
        self.error: HttpError | None = None
        self.local_ended = False  # we sent END_STREAM
        self.remote_ended = False  # the backend sent END_STREAM
        self.reset = False  # a RST_STREAM went either way
        self.slot_held = True  # counts towards the connection's concurrency
        self._head_waiter: trio.Event | None = None
        self._data_waiter: trio.Event | None = None
        self._window_waiter: trio.Event | None = None

    @property
    def finished(self) -> bool:
        """Closed at the HTTP/2 level: both ends ended, or reset."""
        return self.reset or (self.local_ended and self.remote_ended)

    # --- waits (one waiter per kind: the exchange is the stream's only user) -------------

    async def wait_head(self) -> ResponseHead:
        while self.head is None:
            if self.error is not None:
                raise self.error
            self._head_waiter = trio.Event()
            await self._head_waiter.wait()
        return self.head

    async def wait_data(self) -> None:
        """Until a chunk, the end or an error is there to take."""
        if self.chunks or self.remote_ended or self.error is not None:
            return
        self._data_waiter = trio.Event()
        await self._data_waiter.wait()

    async def wait_window(self) -> None:
        self._window_waiter = trio.Event()
        await self._window_waiter.wait()

    def wake(self) -> None:
        for waiter in (self._head_waiter, self._data_waiter, self._window_waiter):
            if waiter is not None:
                waiter.set()
        self._head_waiter = self._data_waiter = self._window_waiter = None

    def wake_window(self) -> None:
        if self._window_waiter is not None:
            self._window_waiter.set()
            self._window_waiter = None

    # --- the consumer's side ------------------------------------------------------------

    def take_chunk(self) -> bytes:
        """The buffered bytes, as one chunk of at most BODY_CHUNK_MAX_BYTES (a run of DATA
        frames leaves in one piece: one write to the client), acknowledged to the peer."""
        chunks = self.chunks
        first = chunks[0]
        if len(first) > BODY_CHUNK_MAX_BYTES:
            chunk = first[:BODY_CHUNK_MAX_BYTES]
            chunks[0] = first[BODY_CHUNK_MAX_BYTES:]
        else:
            chunks.popleft()
            if chunks and len(first) + len(chunks[0]) <= BODY_CHUNK_MAX_BYTES:
                parts = [first]
                size = len(first)
                while chunks and size + len(chunks[0]) <= BODY_CHUNK_MAX_BYTES:
                    more = chunks.popleft()
                    parts.append(more)
                    size += len(more)
                chunk = b"".join(parts)
            else:
                chunk = first
        self.buffered_bytes -= len(chunk)
        self.conn.acknowledge(self, len(chunk))
        return chunk

    def fail(self, error: HttpError) -> None:
        if self.error is None:
            self.error = error
        self.wake()
