"""Backend identity and the default way to open a TCP stream to one.

Owns the translation of connect failures into typed gateway errors (502 refused/unreachable,
504 timeout). Must never pool or retry; ``pool`` and ``upstream`` do that.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from gateway.http.errors import BadGateway, GatewayTimeout


@dataclass(frozen=True, slots=True)
class Backend:
    id: str
    host: str
    port: int
    # host:port as a Host value, for requests that arrive without one (HTTP/1.0).
    authority: bytes = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "authority", f"{self.host}:{self.port}".encode())


Connect = Callable[[Backend], Awaitable[trio.abc.Stream]]


class ConnectFailed(BadGateway):
    kind = "connect_failed"


class ConnectTimedOut(GatewayTimeout):
    kind = "connect_timeout"


async def open_backend_stream(backend: Backend) -> trio.abc.Stream:
    """Plain TCP; TCP_NODELAY is trio's default for SocketStream."""
    return await trio.open_tcp_stream(backend.host, backend.port)


async def connect_with_timeout(
    connect: Connect, backend: Backend, timeout_s: float
) -> trio.abc.Stream:
    """Run ``connect`` under ``timeout_s``, translating OS errors once, here."""
    try:
        with trio.fail_after(timeout_s):
            return await connect(backend)
    except trio.TooSlowError:
        raise ConnectTimedOut(f"connect to {backend.id} timed out")
    except OSError as exc:
        raise ConnectFailed(f"connect to {backend.id}: {exc.strerror or exc}")
