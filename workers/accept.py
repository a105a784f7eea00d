"""The accept loop of one listening socket in one worker.

Survives resource exhaustion the way trio's serve_listeners does: EMFILE, ENFILE,
ENOMEM and ENOBUFS back off (10 ms doubling to 1 s) instead of killing the
listener, and each one is counted (`on_exhausted`); ECONNABORTED is a client that gave up and is ignored. Accepted sockets
are handed to `on_connection`, which spawns the handler elsewhere, so cancelling
this loop (drain) never cancels connections in flight.

Given the listener's stdlib socket (`raw`), the loop accepts on it directly and waits on
the run's dispatcher (`workers.readiness`, edge-triggered: it accepts until the backlog is
empty before it waits) instead of trio's accept: no one-shot epoll re-arm, waiter record and
trio wakeup per connection (with clients that reconnect every 100 requests, issue 18), and
a checkpoint every `_BURST` connections keeps a burst of connections from holding the run.
"""

from __future__ import annotations

import errno
import socket as stdsocket
from collections.abc import Callable

import structlog
import trio

from workers.readiness import Readiness, current_readiness

_BACKOFF_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_IGNORED_ERRNOS = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EAGAIN}

log = structlog.get_logger("expressgateway.worker")

_BURST = 16  # connections accepted back to back before other tasks get a turn


async def serve_accept_loop(
    listener: trio.socket.SocketType,
    name: str,
    on_connection: Callable[[trio.socket.SocketType, tuple[str, int]], None],
    *,
    on_exhausted: Callable[[str], None] | None = None,
    raw: stdsocket.socket | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    if raw is None:
        await _accept_loop(listener, name, on_connection, on_exhausted, None, None)
        return
    readiness = current_readiness()
    fd = raw.fileno()
    readiness.register(fd)
    try:
        await _accept_loop(listener, name, on_connection, on_exhausted, raw, readiness)
    finally:
        # A draining generation must not be woken by connections it no longer takes.
        readiness.unregister(fd)


async def _accept_loop(
    listener: trio.socket.SocketType,
    name: str,
    on_connection: Callable[[trio.socket.SocketType, tuple[str, int]], None],
    on_exhausted: Callable[[str], None] | None,
    raw: stdsocket.socket | None,
    readiness: Readiness | None,
) -> None:
    backoff_s = 0.0
    burst = 0
    while True:
        try:
            if raw is None or readiness is None:
                sock, addr = await listener.accept()
            else:
                if burst >= _BURST:
                    burst = 0
                    await trio.lowlevel.checkpoint()
                try:
                    std, addr = raw.accept()
                except BlockingIOError:
                    burst = 0
                    await readiness.wait_readable(raw.fileno())
                    continue
                burst += 1
                sock = trio.socket.from_stdlib_socket(std)
        except OSError as exc:
            if exc.errno in _BACKOFF_ERRNOS:
                if on_exhausted is not None:
                    on_exhausted("accept_fd_exhausted")
                backoff_s = min(max(backoff_s * 2, 0.01), 1.0)
                log.warning(
                    "accept_backoff",
                    listener=name,
                    errno=errno.errorcode.get(exc.errno or 0, "?"),
                    sleep_s=backoff_s,
                )
                await trio.sleep(backoff_s)
                continue
            if exc.errno in _IGNORED_ERRNOS:
                continue
            raise
        backoff_s = 0.0
        on_connection(sock, (addr[0], addr[1]))
