"""Bodies between adapters: bounded chunks with backpressure, then trailers, then an end.

Owns the BodySource contract every front and back adapter speaks: ``receive()`` gives the
next chunk, ``b""`` once at a clean end (``trailers`` then holds the trailer fields), and
raises a typed HttpError when the body ended any other way (peer reset, timeout, over a
cap), so a relay never dresses a truncated body up as a complete one. Backpressure is the
producer's, and it bounds what a body holds in memory: an HTTP/1.1 source reads from its
socket only when asked (one read, at most ``READ_MAX_BYTES``, is ever queued); an HTTP/2
source holds at most its stream's flow-control window (the window reopens only as chunks
are taken). Must never parse a wire format.
"""

from __future__ import annotations

from gateway.http.model import HeaderList


class BodySource:
    """Base class: an empty body. Subclasses override ``receive`` (and ``discard``)."""

    def __init__(self, length: int | None = 0) -> None:
        # The exact length when known in advance (Content-Length); None when it is not.
        self.length = length
        # True once anything was taken: the body can no longer be replayed to another backend.
        self.started = False
        self.trailers: HeaderList = []
        self.received_bytes = 0
        # The producer may still be waiting on its peer for bytes (an upload in progress):
        # the upstream connection it holds is a tunnel's (its own pool budget).
        self.streaming = False

    async def receive(self) -> bytes:
        self.started = True
        return b""

    def discard(self) -> None:
        """The consumer will read no more: the producer may stop (reset, close, skip)."""
