"""Hot-path receive and send for the H1 proxy: straight to the trio socket of a plain TCP stream.

trio.SocketStream wraps every call in a conflict detector, a generator-based error-translating
context manager and a memoryview; for a proxy doing four socket calls per request that wrapper
costs as much as the call. For a ``trio.SocketStream`` (a final class) these functions call its
public ``socket`` directly and translate OS errors the way SocketStream does; any other stream
(TLS, memory streams in tests) goes through the ordinary Stream API.

Both go to the descriptor with ``os.read``/``os.write`` (trio's socket methods add a context
manager, a cancel check and a frame or two per call). A receive is always a checkpoint: one
that would block waits in ``wait_readable`` (which delivers cancellation), one that gets bytes
at once is followed by ``trio.lowlevel.checkpoint()`` (so a peer that always has bytes ready
can neither starve other tasks nor outrun a deadline; if that checkpoint delivers a
cancellation the bytes read are dropped, and every cancellation here ends the connection).
A send the kernel takes at once is not a scheduling point (trio's own send yields to the run
loop after every successful call, a full scheduler pass per response); only a full buffer
waits (``wait_writable``, a checkpoint that also delivers a lapsed deadline). Fairness and
deadlines still hold because every exchange alternates sends with receives.
On the dispatcher (``DRIVING.mode`` RESIDENT, see ``workers/http1/dispatch.py``) the waits
are the dispatcher's own (``trap``: readable, writable, a yield in place of the checkpoint)
and a stream that is not a plain socket first goes to trio (``TO_TRIO``); a send during the
dispatcher's batch is handed to it (``Readiness.write_soon``: written with the batch's other
writes when the batch ends). Every write here first settles what an earlier batch could not
write on that socket (``Readiness.settle``), so bytes leave in the order they were sent;
``settle`` does the same for a caller about to write through the Stream API or to close.
Must never retry or swallow an error: a broken or closed socket raises exactly the
trio.BrokenResourceError / trio.ClosedResourceError the Stream API would (a write held for
the batch's end that fails is dropped: the connection's next read meets the same error).
"""

from __future__ import annotations

import errno
import os
import socket as stdsocket
from typing import Any, Final

import trio

from workers.http1.dispatch import trap
from workers.readiness import (
    DRIVING,
    RESIDENT,
    TO_TRIO,
    YIELD,
    Readiness,
    current_readiness,
    existing_readiness,
)

_CLOSED_ERRNOS = frozenset((errno.EBADF, errno.ENOTSOCK))

# Bound once: compiled, ``trio.lowlevel.wait_readable`` is two module attribute lookups per
# call; a Final name is a C static.
_SocketStream: Final = trio.SocketStream
_read: Final = os.read
_write: Final = os.write
_checkpoint: Final = trio.lowlevel.checkpoint
_wait_readable: Final = trio.lowlevel.wait_readable
_wait_writable: Final = trio.lowlevel.wait_writable
_driving: Final = DRIVING


def _wraps_stdlib() -> bool:
    """trio's socket keeps the stdlib socket it wraps as ``_sock`` and its shutdown flag as
    ``_did_shutdown_SHUT_WR`` (checked once on a socket trio made: another trio version
    that keeps them otherwise gets its public, interpreted methods)."""
    a, b = stdsocket.socketpair()
    try:
        made: Any = trio.socket.from_stdlib_socket(a)
        return (
            getattr(made, "_sock", None) is a
            and made.did_shutdown_SHUT_WR is False
            and (getattr(made, "_did_shutdown_SHUT_WR", None) is False)
        )
    finally:
        a.close()
        b.close()


_WRAPS_STDLIB: Final = _wraps_stdlib()


def stdlib_socket(sock: trio.socket.SocketType) -> stdsocket.socket | None:
    """The stdlib socket ``sock`` wraps; None when this trio version keeps it otherwise (or
    ``sock`` is not a trio socket)."""
    std = getattr(sock, "_sock", None) if _WRAPS_STDLIB else None
    return std if isinstance(std, stdsocket.socket) else None


def _fileno(sock: trio.socket.SocketType) -> int:
    """``sock.fileno()`` (-1 once closed) through the stdlib socket trio's wraps: a C method,
    where trio's is interpreted Python (four of these per proxied request, issue 18)."""
    if _WRAPS_STDLIB:
        made: Any = sock
        std: stdsocket.socket = made._sock
        return std.fileno()  # typed: compiled, no int() call on an Any
    return sock.fileno()


def _shut_for_writing(sock: trio.socket.SocketType) -> bool:
    """``sock.did_shutdown_SHUT_WR`` without trio's interpreted property."""
    if _WRAPS_STDLIB:
        made: Any = sock
        return bool(made._did_shutdown_SHUT_WR)
    return sock.did_shutdown_SHUT_WR


def _translate(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if exc.errno in _CLOSED_ERRNOS:
        return trio.ClosedResourceError("this socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


async def receive_some(
    stream: trio.abc.Stream,
    max_bytes: int,
    readiness: Readiness | None = None,
    checkpoint: bool = True,
) -> bytes | bytearray:
    """``stream.receive_some(max_bytes)``; b"" at EOF. Always a checkpoint, unless
    ``checkpoint`` is False and bytes were already waiting: only for a caller that is sure to
    yield soon anyway. ``readiness``: where the socket is registered (see ``watch``); None
    waits through trio."""
    if type(stream) is not _SocketStream:
        if _driving.mode == RESIDENT:
            await trap(TO_TRIO)
        return await stream.receive_some(max_bytes)
    sock = stream.socket
    try:
        try:
            data = _read(_fileno(sock), max_bytes)  # fileno() is -1 once closed: EBADF
        except BlockingIOError:
            pass
        else:
            if checkpoint:
                if _driving.mode == RESIDENT:
                    await trap(YIELD)
                else:
                    await _checkpoint()
            return data
        return await _wait_and_read(sock, max_bytes, readiness)
    except OSError as exc:
        raise _translate(exc) from exc


async def receive_when_ready(
    stream: trio.abc.Stream, max_bytes: int, readiness: Readiness | None = None
) -> bytes | bytearray:
    """``receive_some`` for a read that almost surely has to wait (a response just requested):
    waits for readability first instead of paying for a read that fails."""
    if type(stream) is not _SocketStream:
        if _driving.mode == RESIDENT:
            await trap(TO_TRIO)
        return await stream.receive_some(max_bytes)
    try:
        return await _wait_and_read(stream.socket, max_bytes, readiness)
    except OSError as exc:
        raise _translate(exc) from exc


async def _wait_and_read(
    sock: trio.socket.SocketType, max_bytes: int, readiness: Readiness | None
) -> bytes:
    while True:
        fd = _fileno(sock)
        if readiness is None:
            if _driving.mode == RESIDENT:
                await trap(TO_TRIO)
            await _wait_readable(sock)
        elif fd < 0:
            pass  # closed: the read says so
        elif _driving.mode == RESIDENT:
            await trap(fd * 2)
        else:
            await readiness.wait_readable(fd)
        try:
            return _read(_fileno(sock), max_bytes)
        except BlockingIOError:
            pass


def watch(stream: trio.abc.Stream) -> Readiness | None:
    """Register a plain TCP stream's socket with this run's Readiness (for its whole life);
    None for other streams."""
    if type(stream) is not _SocketStream:
        return None
    readiness = current_readiness()
    readiness.register(_fileno(stream.socket))
    return readiness


def socket_fd(stream: trio.abc.Stream) -> int:
    """The descriptor of a plain TCP stream's socket (-1 for other streams)."""
    if type(stream) is not _SocketStream:
        return -1
    return _fileno(stream.socket)


def forget(stream: trio.abc.Stream) -> None:
    """Before closing a stream ``watch`` may have registered: wake a task waiting on it with
    ClosedResourceError (as trio does for its own waiters) and drop its ready flag."""
    if type(stream) is not _SocketStream:
        return
    readiness = existing_readiness()
    fd = _fileno(stream.socket)
    if readiness is not None and fd >= 0:
        readiness.notify_closing(fd)


def send_now(stream: trio.abc.Stream, data: bytes) -> int:
    """Write what the kernel takes without waiting; how many bytes of ``data`` went out.

    0 for streams other than a plain ``trio.SocketStream`` (``send_rest`` sends it all).
    Never a scheduling point, so a caller arms its write deadline only when this falls short.
    """
    if type(stream) is not _SocketStream or not data:
        return 0
    sock = stream.socket
    if _shut_for_writing(sock):
        raise trio.ClosedResourceError("can't send data after sending EOF")
    fd = _fileno(sock)  # -1 once closed: the write raises EBADF
    try:
        if _driving.stalls and not _settled(fd):
            return 0  # bytes of an earlier batch wait for room: ``send_rest`` waits too
        batch = _driving.batch
        if batch is not None and fd >= 0 and _driving.mode == RESIDENT:
            return batch.write_soon(fd, data)
        return _write(fd, data)
    except BlockingIOError:
        return 0
    except OSError as exc:
        raise _translate(exc) from exc


def _settled(fd: int) -> bool:
    """Nothing an earlier batch held for ``fd`` is still waiting for room (writes it if it
    can now)."""
    readiness = existing_readiness()
    return readiness is None or fd < 0 or readiness.settle(fd)


def settled_now(stream: trio.abc.Stream) -> bool:
    """``settle`` without its wait: True when nothing the batches held for the stream's socket
    is left (written now if the kernel takes it)."""
    if not _driving.stalls or type(stream) is not _SocketStream:
        return True
    return _settled(_fileno(stream.socket))


async def settle(stream: trio.abc.Stream) -> None:
    """Wait until what the dispatcher's batches held for this stream's socket is written:
    before writing through the Stream API, shutting it down or closing it (a checkpoint only
    when something is stalled; cancellation is delivered there)."""
    if not _driving.stalls or type(stream) is not _SocketStream:
        return
    sock = stream.socket
    try:
        while not _settled(_fileno(sock)):
            if _driving.mode == RESIDENT:
                await trap(_fileno(sock) * 2 + 1)
            else:
                await _wait_writable(sock)
    except OSError as exc:
        raise _translate(exc) from exc


async def send_rest(stream: trio.abc.Stream, data: bytes, sent: int) -> None:
    """Send ``data[sent:]`` (after ``send_now`` fell short), waiting for room as needed."""
    if type(stream) is not _SocketStream:
        if _driving.mode == RESIDENT:
            await trap(TO_TRIO)
        await stream.send_all(data[sent:] if sent else data)
        return
    sock = stream.socket
    try:
        with memoryview(data) as view:
            while sent < len(data):
                fd = _fileno(sock)
                if fd < 0:
                    pass  # closed: the write says so
                elif _driving.mode == RESIDENT:
                    await trap(fd * 2 + 1)
                else:
                    await _wait_writable(sock)
                fd = _fileno(sock)  # again: it may have been closed during the wait
                if _driving.stalls and not _settled(fd):
                    continue  # an earlier batch's bytes go first
                try:
                    sent += _write(fd, view[sent:])
                except BlockingIOError:
                    pass
    except OSError as exc:
        raise _translate(exc) from exc


async def send_all(stream: trio.abc.Stream, data: bytes) -> None:
    """``stream.send_all(data)``; no scheduling point when the kernel takes it all at once."""
    sent = send_now(stream, data)
    if sent < len(data):
        await send_rest(stream, data, sent)
