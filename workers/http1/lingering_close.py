"""The lingering close of an HTTP/1.1 client connection: half-close, read and discard what the
client still sends within the bounds ``gateway.http.lingering_close`` sets, then the close;
and its opposite, the abortive close (a reset) that tells a client reading a body until
our close that the body was cut short.

Owns only the I/O of it (the decision and the bounds are the pure module's). Interpreted on
purpose (tools/build_native leaves it out): it runs once per closing connection, never per
request, and waits under cancel scopes of its own. Must never raise for peer behaviour and
never keep what it reads.
"""

from __future__ import annotations

import socket
import struct

import trio

from gateway.http.limits import READ_MAX_BYTES
from gateway.http.lingering_close import Linger, LingerLimits
from workers.http1.socket_io import receive_some
from workers.readiness import Readiness


async def linger_before_close(
    stream: trio.abc.Stream, readiness: Readiness | None, limits: LingerLimits
) -> int:
    """Send our FIN after the response, then drain input until the client closes or a bound
    is hit; the caller closes the stream. Returns the bytes discarded."""
    if not isinstance(stream, trio.abc.HalfCloseableStream):
        return 0  # TLS cannot half-close: a plain close, as before
    try:
        await stream.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return 0
    linger = Linger(limits, trio.current_time())
    reading = True
    while reading:
        data: bytes | bytearray = b""
        with trio.move_on_at(linger.next_deadline()) as scope:
            try:
                data = await receive_some(stream, READ_MAX_BYTES, readiness)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
        if scope.cancelled_caught:
            break
        reading = linger.on_read(len(data), trio.current_time())
    return linger.read_bytes


_LINGER_ZERO = struct.pack("ii", 1, 0)


def reset_on_close(stream: trio.abc.Stream) -> None:
    """Make the coming close a reset (SO_LINGER 0), for a plain TCP stream; TLS streams and
    others close as they do (their close_notify or FIN cannot say more)."""
    sock = getattr(stream, "socket", None)
    if isinstance(stream, trio.SocketStream) and sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        except OSError:
            pass  # already closed: nothing left to tell
