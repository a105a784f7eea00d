"""Backend identity and the default way to open a TCP stream to one.

Owns the translation of connect failures into typed gateway errors (502 refused/unreachable,
504 timeout, 503 when this worker is out of descriptors: a local failure, not the
backend's). Must never pool or retry; ``pool`` and ``upstream`` do that.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from gateway.errors import LOCAL_EXHAUSTION_ERRNOS, LocalResourceExhausted
from gateway.http.errors import BadGateway, GatewayTimeout, LocalExhausted


@dataclass(frozen=True, slots=True)
class Backend:
    id: str
    host: str
    port: int
    # host:port as a Host value, for requests that arrive without one (HTTP/1.0).
    authority: bytes = field(init=False, compare=False, repr=False)
    # What the upstream pool files it under: equal exactly when the Backends are equal, and
    # a str, whose hash Python caches (the dataclass's own __hash__ is interpreted Python
    # that hashes a tuple of the fields: two of them per proxied request, issue 18).
    key: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "authority", f"{self.host}:{self.port}".encode())
        object.__setattr__(self, "key", f"{self.id}\x00{self.host}\x00{self.port}")


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
    except LocalResourceExhausted as exc:  # from workers.dial (TLS backends)
        raise LocalExhausted(str(exc))
    except OSError as exc:
        if _is_local_exhaustion(exc):
            raise LocalExhausted(f"connect to {backend.id}: {exc.strerror or exc}")
        raise ConnectFailed(f"connect to {backend.id}: {exc.strerror or exc}")


def _is_local_exhaustion(exc: OSError) -> bool:
    """EMFILE and kin on our side; trio's open_tcp_stream wraps each attempt's error in an
    exception group under an errno-less OSError."""
    if exc.errno in LOCAL_EXHAUSTION_ERRNOS:
        return True
    group = exc.__cause__
    if isinstance(group, BaseExceptionGroup):
        errors = group.exceptions
        return bool(errors) and all(
            isinstance(e, OSError) and e.errno in LOCAL_EXHAUSTION_ERRNOS for e in errors
        )
    return False
