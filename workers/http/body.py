"""Bodies between adapters: bounded chunks with backpressure, then trailers, then an end.

Owns the BodySource contract every front and back adapter speaks: ``receive()`` gives the
next chunk (at most ``BODY_CHUNK_MAX_BYTES``), ``b""`` once at a clean end (``trailers``
then holds the trailer fields), and raises a typed HttpError when the body ended any other
way (peer reset, timeout, over a cap), so a relay never dresses a truncated body up as a
complete one. Backpressure is the producer's: a source only holds what its window allows
(H2/H3: the flow-control window it grants as chunks are taken; ``ChannelBody``:
``BODY_WINDOW_CHUNKS`` chunks). Must never parse a wire format.
"""

from __future__ import annotations

import trio

from gateway.http.errors import HttpError
from gateway.http.limits import BODY_CHUNK_MAX_BYTES, BODY_WINDOW_CHUNKS
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

    async def receive(self) -> bytes:
        self.started = True
        return b""

    def discard(self) -> None:
        """The consumer will read no more: the producer may stop (reset, close, skip)."""


EMPTY_LENGTH = 0


def empty_body() -> BodySource:
    return BodySource(EMPTY_LENGTH)


class _End:
    __slots__ = ("trailers",)

    def __init__(self, trailers: HeaderList) -> None:
        self.trailers = trailers


class ChannelBody(BodySource):
    """A body fed by a producer task through a bounded channel (``BODY_WINDOW_CHUNKS`` deep).

    ``feed`` waits while the window is full; ``finish`` ends it cleanly, ``fail`` with an
    error the consumer's next ``receive`` raises. A discarded body swallows what is fed.
    """

    def __init__(self, length: int | None = None) -> None:
        super().__init__(length)
        self._send, self._recv = trio.open_memory_channel[bytes | _End | HttpError](
            BODY_WINDOW_CHUNKS
        )

    async def feed(self, data: bytes) -> None:
        for i in range(0, len(data), BODY_CHUNK_MAX_BYTES):
            await self._put(data[i : i + BODY_CHUNK_MAX_BYTES])

    async def finish(self, trailers: HeaderList | None = None) -> None:
        await self._put(_End(trailers or []))

    async def fail(self, exc: HttpError) -> None:
        await self._put(exc)

    async def _put(self, item: bytes | _End | HttpError) -> None:
        try:
            await self._send.send(item)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the consumer discarded the body

    async def receive(self) -> bytes:
        self.started = True
        item = await self._recv.receive()
        if isinstance(item, bytes):
            self.received_bytes += len(item)
            return item
        if isinstance(item, _End):
            self.trailers = item.trailers
            return b""
        raise item

    def discard(self) -> None:
        self._recv.close()
