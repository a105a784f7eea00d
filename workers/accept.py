"""The accept loop of one listening socket in one worker.

Survives resource exhaustion the way trio's serve_listeners does: EMFILE, ENFILE,
ENOMEM and ENOBUFS back off (10 ms doubling to 1 s) instead of killing the
listener, and each one is counted (`on_exhausted`); ECONNABORTED is a client that gave up and is ignored. Accepted sockets
are handed to `on_connection`, which spawns the handler elsewhere, so cancelling
this loop (drain) never cancels connections in flight.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import structlog
import trio

_BACKOFF_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_IGNORED_ERRNOS = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EAGAIN}

log = structlog.get_logger("expressgateway.worker")


async def serve_accept_loop(
    listener: trio.socket.SocketType,
    name: str,
    on_connection: Callable[[trio.socket.SocketType, tuple[str, int]], None],
    *,
    on_exhausted: Callable[[str], None] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    backoff_s = 0.0
    while True:
        try:
            sock, addr = await listener.accept()
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
