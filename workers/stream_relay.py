"""Bidirectional byte relay between two trio streams (TLS on either side), with half-close.

Used where splice cannot be (a TLS side means the bytes pass through user space anyway).
EOF from one side is passed on as half-close when the other side is a plain TCP stream
(`send_eof` -> shutdown(SHUT_WR)), so send-then-wait protocols keep working.

TLS has no half-close that trio exposes (`SSLStream` is not a HalfCloseableStream, and
TLS 1.2 ends both directions with close_notify), so when one direction ends at EOF and the
*other* side is TLS, the whole connection ends: the caller's `close_streams` sends
close_notify (a clean TLS end) and closes both transports. Concretely, for a `tls`
listener in front of a plain backend: client close_notify/EOF -> backend SHUT_WR, and the
backend's answer still flows; backend EOF -> close_notify to the client, connection closed.

A client that closes TCP without close_notify (a "ragged" EOF, common and harmless for a
byte relay) is treated as EOF; a reset raises PeerReset. Must never log per connection.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

import trio

from workers.relay import PeerReset

CHUNK_BYTES = 64 * 1024
CLOSE_GRACE_S = 1.0  # time allowed to send close_notify, even when the relay was cancelled


def _is_ragged_eof(exc: trio.BrokenResourceError) -> bool:
    return isinstance(exc.__cause__, ssl.SSLEOFError)


async def _pump(
    src: trio.abc.Stream,
    dst: trio.abc.Stream,
    count: Callable[[int], None],
    end_all: trio.CancelScope,
) -> None:
    try:
        while data := await src.receive_some(CHUNK_BYTES):
            count(len(data))
            await dst.send_all(data)
    except trio.BrokenResourceError as exc:
        if not _is_ragged_eof(exc):
            raise PeerReset(str(exc.__cause__ or exc)) from None
    if isinstance(dst, trio.abc.HalfCloseableStream):
        try:
            await dst.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer is gone; the other direction will notice
    else:
        end_all.cancel()  # no half-close over TLS: this direction's end ends the connection


async def relay_streams(
    client: trio.abc.Stream,
    backend: trio.abc.Stream,
    *,
    on_upstream_bytes: Callable[[int], None],
    on_downstream_bytes: Callable[[int], None],
) -> None:
    """Relay until both directions ended (or one ended towards a TLS side)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_pump, client, backend, on_upstream_bytes, nursery.cancel_scope)
        nursery.start_soon(_pump, backend, client, on_downstream_bytes, nursery.cancel_scope)


async def close_streams(*streams: trio.abc.Stream) -> None:
    """Close cleanly (TLS: close_notify) within a grace period, even under cancellation."""
    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_GRACE_S):
        for stream in streams:
            try:
                await stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # already broken: aclose still closed the transport
    for stream in streams:
        await trio.aclose_forcefully(stream)
