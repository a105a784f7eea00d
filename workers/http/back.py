"""The back-adapter contract: how the proxy core runs one exchange against one backend.

Owns what every back adapter (H1, H2, H3 upstream clients with their pools) promises the
core, and the two failures that allow a retry. ``open_exchange(nursery, backend, head,
body)`` sends the neutral request (the adapter's codec adds Host or ``:authority`` and the
framing), uploads ``body`` from a task it starts in ``nursery`` (the core cancels that
nursery when the exchange ends, so an early response stops the upload), and returns once
the final response head arrived (interim 1xx consumed) as an ``UpstreamResponse`` whose
``release`` the core calls exactly once. If ``open_exchange`` raises or is cancelled, the
adapter has already cleaned up (connection closed or stream reset). Timeouts: the adapter
applies the connect, response-head (armed once the upload finished) and body-idle limits it
was built with; the core owns the total deadline. Must never pick a backend or retry.
"""

from __future__ import annotations

from typing import Protocol

import trio

from gateway.http.errors import BadGateway
from gateway.http.model import RequestHead, ResponseHead
from workers.http.body import BodySource
from workers.http1.backend import Backend


class UpstreamRefused(BadGateway):
    """Nothing of the request was processed (connect failed, REFUSED_STREAM, a GOAWAY past the
    stream): another backend may take it, provided its body was not consumed."""

    kind = "upstream_refused"


class UpstreamLost(BadGateway):
    """A reused connection died before any response byte: the backend may have seen the
    request, so only an idempotent request with an untouched body may go elsewhere."""

    kind = "stale_connection"


class UpstreamResponse:
    """The final response head and its body; ``release`` returns or resets the stream."""

    def __init__(
        self, head: ResponseHead, body: BodySource, declared_length: int | None = None
    ) -> None:
        self.head = head
        self.body = body
        # Content-Length as declared, for body-less answers (HEAD, 304) that still state it.
        self.declared_length = declared_length if declared_length is not None else body.length

    async def release(self, *, complete: bool) -> None:
        """``complete``: the body was read to its clean end; otherwise abandon the stream."""


class BackAdapter(Protocol):
    protocol: str

    async def open_exchange(
        self, nursery: trio.Nursery, backend: Backend, head: RequestHead, body: BodySource
    ) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...
