"""serve_h1_connection: run one client connection (``connection.ClientConnection``), on the
run's dispatcher when it is plain TCP (``dispatch.drive``), under its deadline (enforced by the listener's ``deadline_watch.DeadlineWatch``: no task or nursery of
its own), answer a lapse, let the last response's bytes the dispatcher still holds go out,
linger when the client may still be sending (issue 17 item 4) or reset when a
close-delimited response was cut short (item 6), close the stream.

Interpreted on purpose (tools/build_native leaves it out): it closes the stream in a
``finally``, and a mypyc-compiled coroutine must never await while an exception is being
handled: it would leave that exception in the thread's exception state for whichever task
runs next. Must never raise for peer behaviour.
"""

from __future__ import annotations

import os

import trio

from workers.http1.connection import ClientConnection, peer_of
from workers.http1.context import H1Context
from workers.http1.dispatch import drive
from workers.http1.lingering_close import linger_before_close, reset_on_close
from workers.http1.socket_io import forget, settle, settled_now
from workers.readiness import DRIVING


async def serve_h1_connection(
    stream: trio.abc.Stream, ctx: H1Context, client_addr: str | None = None, certificate: int = 0
) -> None:
    """Serve one client connection until it closes; never raises for peer behaviour.

    ``certificate``: on TLS, the index of the certificate the handshake chose (the
    misdirected-request check compares it with each request's authority)."""
    conn = ClientConnection(stream, ctx, client_addr or peer_of(stream), certificate)
    try:
        try:
            with conn.life:  # cancelled by the listener's DeadlineWatch on a lapse
                readiness = conn.reader.readiness  # None: not a plain TCP stream
                if readiness is not None and ctx.resident and ctx.general is None:
                    # A coroutine of the dispatcher, with this task parked as its owner
                    # (workers/http1/dispatch.py); the general core's listeners are not:
                    # every request would go to trio and back.
                    await drive(readiness, conn.serve())
                else:
                    await conn.serve()
        finally:
            conn.deadline.retire()
        await finish_connection(conn)
    finally:
        if isinstance(stream, trio.SocketStream):
            close_now(conn)
        else:
            conn.reader.release()
            forget(stream)
            await trio.aclose_forcefully(stream)


async def finish_connection(conn: ClientConnection) -> None:
    """What a connection does after its last request, before its close: answer a lapse, let
    the bytes the dispatcher still holds go out, reset or linger (``quiet_end`` says when
    there is nothing of it to do)."""
    stream = conn.stream
    if conn.deadline.lapsed:
        await conn.answer_lapse()
    if DRIVING.stalls and not conn.abort:
        # The last response may still wait for room (held by the dispatcher's batch):
        # it goes out before the shutdown or close, within the client write timeout.
        with trio.move_on_after(conn.limits.body_timeout_ms / 1000):
            await settle(stream)
    if conn.abort:
        reset_on_close(stream)
    elif conn.lingers():
        await linger_before_close(stream, conn.reader.readiness, conn.limits.linger)


def quiet_end(conn: ClientConnection) -> bool:
    """True when ``finish_connection`` has nothing to wait for: no lapse to answer, nothing
    held back (what is stalled is written now if the kernel takes it), no linger; a reset
    (``conn.abort``) is made ready here."""
    if conn.deadline.lapsed:
        return False
    if conn.abort:
        reset_on_close(conn.stream)
        return True
    if not settled_now(conn.stream):
        return False
    return not conn.lingers()


def close_now(conn: ClientConnection) -> None:
    """Close a plain TCP connection's socket (after ``finish_connection`` or ``quiet_end``).

    What SocketStream.aclose does, without its checkpoint (under aclose_forcefully's
    cancelled scope that checkpoint raises and catches a Cancelled on every connection's end)
    and without trio's notify_closing: no task waits on this socket now (its connection was
    its only user, and trio keeps a registration only while a wait is on), and for an fd it
    never saw trio builds a waiter record and an exception and fails an EPOLL_CTL_DEL (~10 µs
    of a connection's ~150 with a client that closes after each request)."""
    stream = conn.stream
    conn.reader.release()
    forget(stream)
    assert isinstance(stream, trio.SocketStream)
    fd = stream.socket.detach()
    if fd >= 0:
        os.close(fd)
