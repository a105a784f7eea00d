"""The front side of an exchange: where the proxy core writes the response.

Owns the ResponseSink contract front adapters implement (H1: bytes on the connection; H2/H3:
frames on one stream). ``send_error`` answers with a small locally generated response when
nothing was sent yet; ``abort`` ends a response already under way without making it look
complete (H1: close without the chunked terminator; H2/H3: reset the stream). Must never
decide a status or a retry; the core does.
"""

from __future__ import annotations

from typing import Protocol

from gateway.http.errors import HttpError
from gateway.http.model import HeaderList, ResponseHead


class ResponseSink(Protocol):
    # True once a response head went out: errors can then only abort.
    started: bool
    bytes_out: int

    async def send_head(self, head: ResponseHead, *, length: int | None, end: bool) -> None:
        """``length``: Content-Length to state (None: unknown); ``end``: no body follows."""

    async def send_data(self, data: bytes) -> None: ...

    async def send_end(self, trailers: HeaderList) -> None: ...

    async def send_error(self, exc: HttpError) -> None: ...

    async def abort(self, exc: HttpError) -> None: ...
