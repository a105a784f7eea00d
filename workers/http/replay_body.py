"""A request body a refused attempt can send again, within a byte cap.

Owns: keeping the chunks the attempts take from the front's body while they total at most
``cap`` bytes, so that when a backend refuses the request unprocessed (HTTP/2
REFUSED_STREAM, a GOAWAY below its stream, HTTP/3 H3_REQUEST_REJECTED) the retry rule can
offer it whole to another backend; ``rewind`` starts the next attempt from the first byte.
``started`` (the retry rule's "can it no longer be sent from the start") turns true only
when the body outgrew the cap: the kept chunks are dropped then and never replayed.
Must never: hold more than ``cap`` bytes, or replay a body it did not keep whole.
"""

from __future__ import annotations

from gateway.http.model import HeaderList
from workers.http.body import BodySource


class ReplayableBody(BodySource):
    """Wraps the front's body for the attempts; the producer's fields are read through."""

    def __init__(self, inner: BodySource, cap: int) -> None:
        # Not BodySource.__init__: started, trailers, received_bytes and streaming are views.
        self.length = inner.length
        self._inner = inner
        self._cap = cap
        self._kept: list[bytes] = []
        self._kept_bytes = 0
        self._next = 0  # index into _kept of the chunk the current attempt reads next
        self._ended = False
        self._outgrown = False

    @property
    def started(self) -> bool:  # type: ignore[override]
        return self._outgrown

    @property
    def trailers(self) -> HeaderList:  # type: ignore[override]
        return self._inner.trailers

    @property
    def received_bytes(self) -> int:  # type: ignore[override]
        return self._inner.received_bytes

    @property
    def streaming(self) -> bool:  # type: ignore[override]
        return self._inner.streaming

    async def receive(self) -> bytes:
        if self._next < len(self._kept):
            chunk = self._kept[self._next]
            self._next += 1
            return chunk
        if self._ended:
            return b""
        chunk = await self._inner.receive()
        if not chunk:
            self._ended = True
            return chunk
        if not self._outgrown:
            if self._kept_bytes + len(chunk) <= self._cap:
                self._kept.append(chunk)
                self._kept_bytes += len(chunk)
                self._next += 1
            else:
                self._outgrown = True
                self._kept = []
                self._kept_bytes = 0
        return chunk

    def rewind(self) -> None:
        """The next attempt reads from the first byte (only while nothing was dropped)."""
        if self._outgrown:
            raise RuntimeError("a body past the replay cap cannot be sent again")
        self._next = 0

    def discard(self) -> None:
        self._inner.discard()
