"""Hot-path receive and send for the H1 proxy: straight to the trio socket of a plain TCP stream.

trio.SocketStream wraps every call in a conflict detector, a generator-based error-translating
context manager and a memoryview; for a proxy doing four socket calls per request that wrapper
costs as much as the call. For a ``trio.SocketStream`` (a final class) these functions call its
public ``socket`` directly and translate OS errors the way SocketStream does; any other stream
(TLS, memory streams in tests) goes through the ordinary Stream API. Cancellation and
scheduling points are the trio socket's own, so timeouts and fairness are unchanged.
Must never buffer, retry or swallow an error: a broken or closed socket raises exactly the
trio.BrokenResourceError / trio.ClosedResourceError the Stream API would.
"""

from __future__ import annotations

import errno

import trio

_CLOSED_ERRNOS = frozenset((errno.EBADF, errno.ENOTSOCK))


def _translate(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if exc.errno in _CLOSED_ERRNOS:
        return trio.ClosedResourceError("this socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


async def receive_some(stream: trio.abc.Stream, max_bytes: int) -> bytes | bytearray:
    """``stream.receive_some(max_bytes)``; b"" at EOF."""
    if type(stream) is not trio.SocketStream:
        return await stream.receive_some(max_bytes)
    try:
        return await stream.socket.recv(max_bytes)
    except OSError as exc:
        raise _translate(exc) from exc


async def send_all(stream: trio.abc.Stream, data: bytes) -> None:
    """``stream.send_all(data)``."""
    if type(stream) is not trio.SocketStream or not data:
        await stream.send_all(data)
        return
    sock = stream.socket
    if sock.did_shutdown_SHUT_WR:
        raise trio.ClosedResourceError("can't send data after sending EOF")
    try:
        sent = await sock.send(data)
        if sent < len(data):
            with memoryview(data) as view:
                while sent < len(data):
                    sent += await sock.send(view[sent:])
    except OSError as exc:
        raise _translate(exc) from exc
