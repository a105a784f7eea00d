"""Bidirectional byte relay between two connected sockets, with half-close.

Uses `os.splice` through a pipe (zero copy) where the kernel allows it, and falls
back to recv/send (also for a direction whose pipe cannot be created because the worker
is out of descriptors). Each direction ends at EOF from its source, which is passed on
as a write shutdown (half-close), so protocols that send then wait (e.g. a client
that shuts down its write side and reads the reply) work.
"""

from __future__ import annotations

import errno
import os
import socket as stdsocket
from collections.abc import Callable

import trio

from gateway.errors import LOCAL_EXHAUSTION_ERRNOS

_CHUNK = 64 * 1024
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
HAS_SPLICE = hasattr(os, "splice")

_RESET_ERRNOS = {
    errno.ECONNRESET,
    errno.EPIPE,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
}


class PeerReset(Exception):
    """One side reset the connection: the relay aborts both directions."""


async def _pump_splice(
    src: trio.socket.SocketType, dst: trio.socket.SocketType, count: Callable[[int], None]
) -> None:
    try:
        pipe_r, pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno not in LOCAL_EXHAUSTION_ERRNOS:
            raise
        await _pump_copy(src, dst, count)  # no descriptors for a pipe (EMFILE): copy instead
        return
    try:
        sfd, dfd = src.fileno(), dst.fileno()
        while True:
            await trio.lowlevel.wait_readable(sfd)
            try:
                n = os.splice(sfd, pipe_w, _CHUNK, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno in _RESET_ERRNOS:
                    raise PeerReset(exc.strerror) from None
                raise
            if n == 0:
                return
            count(n)
            pending = n
            while pending:
                try:
                    pending -= os.splice(pipe_r, dfd, pending, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(dfd)
                except OSError as exc:
                    if exc.errno in _RESET_ERRNOS:
                        raise PeerReset(exc.strerror) from None
                    raise
            await trio.lowlevel.checkpoint_if_cancelled()
    finally:
        os.close(pipe_r)
        os.close(pipe_w)


async def _pump_copy(
    src: trio.socket.SocketType, dst: trio.socket.SocketType, count: Callable[[int], None]
) -> None:
    while True:
        try:
            data = await src.recv(_CHUNK)
        except OSError as exc:
            if exc.errno in _RESET_ERRNOS:
                raise PeerReset(exc.strerror) from None
            raise
        if not data:
            return
        count(len(data))
        view = memoryview(data)
        while view:
            try:
                sent = await dst.send(view)
            except OSError as exc:
                if exc.errno in _RESET_ERRNOS:
                    raise PeerReset(exc.strerror) from None
                raise
            view = view[sent:]


def _shutdown_write(sock: trio.socket.SocketType) -> None:
    try:
        sock.shutdown(stdsocket.SHUT_WR)
    except OSError:
        pass  # the peer is already gone; the other direction will notice


async def relay(
    client: trio.socket.SocketType,
    backend: trio.socket.SocketType,
    *,
    on_upstream_bytes: Callable[[int], None],
    on_downstream_bytes: Callable[[int], None],
    use_splice: bool = HAS_SPLICE,
) -> None:
    """Relay until both directions reached EOF; raises PeerReset if either side reset."""
    pump = _pump_splice if use_splice else _pump_copy

    async def one_way(
        src: trio.socket.SocketType, dst: trio.socket.SocketType, count: Callable[[int], None]
    ) -> None:
        await pump(src, dst, count)
        _shutdown_write(dst)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one_way, client, backend, on_upstream_bytes)
        nursery.start_soon(one_way, backend, client, on_downstream_bytes)
