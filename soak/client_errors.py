"""Error classes a load client counts, and the one place OS errors are translated to them.

The classes are the vocabulary of `chaos_schedule.ALLOWED_ERRORS`: connect_refused,
connect_error, reset, eof_early (the peer closed before a full answer), timeout, protocol,
status_NNN (an unexpected HTTP status), mismatch (an echo or a body came back wrong),
ws_closed, udp_lost, not_reaped (a slow attacker outlived the gateway's guard). It must
never decide which errors are acceptable.
"""

from __future__ import annotations

import errno

import trio


class ClientError(Exception):
    """A failed exchange, already classified."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


def classify(exc: BaseException, *, connecting: bool = False) -> str:
    if isinstance(exc, ClientError):
        return exc.kind
    if isinstance(exc, trio.TooSlowError | TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connect_refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | trio.BrokenResourceError):
        return "reset"
    if isinstance(exc, OSError):
        if exc.errno in (errno.ECONNRESET, errno.EPIPE):
            return "reset"
        if exc.errno == errno.ETIMEDOUT:
            return "timeout"
        return "connect_error" if connecting else "reset"
    return "protocol"
