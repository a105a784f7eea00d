"""A plain-TCP HTTP/1.1 client connection started, and most often ended, without a trio task.

``serve.serve_h1_connection`` runs in a task of its own (the connection's *owner*), which
queues the connection's coroutine on the run's dispatcher and parks until it ends
(``dispatch.drive``). Most connections never need that task for anything else: their
requests run on the dispatcher, and their end is a close. Here the one who accepted the
connection (the worker, ``ConnectionHost``) hands it over, the coroutine is queued on the
dispatcher with no owner (``readiness.Driven``'s keeper is this object), and a task is
started only when the connection needs one (issue 18: a task, two cancel scopes, a park and
a wake per connection; a request on a connection of its own cost 96 CPU-µs, 63 this way):

- its coroutine yields for trio (``TO_TRIO``: a dial, an error answer, a tunnel...), yields a
  trio trap, or raises: the task takes it from that move (``dispatch.drive_from``);
- its deadline lapses (``DeadlineWatch`` calls ``lapse``) or the host cuts it (drain: the
  host's ``live_scopes`` holds it, ``cancel``): its life scope is cancelled, the dispatcher
  gives it up (``Readiness.detach``) and the task throws trio's Cancelled into it, where it
  waited, as ``drive`` does for an owner whose scope was cancelled;
- it finished, and its end has something to wait for (a lapse to answer, held bytes that
  need room, a linger: ``serve.quiet_end`` says): the task runs ``serve.finish_connection``.

Otherwise its end runs on the dispatcher, after the batch's held writes went out: the close
(``serve.close_now``) and the host's accounting (``ConnectionHost.connection_ended``).

On a listener that also takes HTTP/2 with prior knowledge (``FirstBytes``), the acceptor
reads the first bytes (that read is the first request's too); until they tell HTTP/1.1 from
the preface, the rest is awaited on the dispatcher as well, under the header timeout (a
silent client is closed without a word, as an idle keep-alive); the preface gets a task
running the HTTP/2 front with the bytes read.

Interpreted on purpose (tools/build_native leaves it out): the task's coroutine awaits in
``finally``. Owns: the connection's handover between dispatcher and task. Must never raise
into the dispatcher or the watch (errors go to ``connection_failed``), and must call
``connection_ended`` exactly once per connection.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, MutableSet
from typing import Any, Final, Protocol

import trio

from workers.http1.connection import ClientConnection
from workers.http1.context import H1Context
from workers.http1.dispatch import drive_from, trap
from workers.http1.exchange_steps import KEEPALIVE_IDLE, UNWATCHED
from workers.http1.serve import close_now, finish_connection, quiet_end
from workers.readiness import DETACHED, DRIVING, FINISHED, RESIDENT, Driven, Readiness

# What a connection's first bytes say (``FirstBytes.classify``).
NOT_YET: Final = 0  # the start of the other protocol's preface: the rest decides
HTTP1: Final = 1
OTHER: Final = 2  # the other protocol the listener takes (HTTP/2 with prior knowledge)
NOTHING: Final = 3  # the client closed, or the socket failed, before a byte

_SERVE_OTHER: Final = "serve other"  # a task's move: serve the other protocol


class FirstBytes(Protocol):
    """A listener that takes another protocol on the same port besides HTTP/1.1 (HTTP/2
    with prior knowledge): a connection's first bytes, read (one read for both: no peek),
    what they say, and the server of the other protocol."""

    def read_first(self, sock: trio.socket.SocketType) -> bytes | None:
        """What has come (taken from the socket); None: nothing yet, b"": its end or an
        error. Never waits, never raises."""

    def classify(self, data: bytes) -> int:
        """HTTP1, OTHER or NOT_YET (the start of the other protocol's preface) for the
        bytes read so far (not empty)."""

    async def serve_other(self, stream: trio.SocketStream, client: str, first: bytes) -> None:
        """Serve a connection whose first bytes (``first``, already read) said OTHER (run in
        its own task)."""


class ConnectionHost(Protocol):
    """What the acceptor lends a connection it starts without a task (the worker's listener:
    ``workers.worker.ListenerRuntime``)."""

    @property
    def live_scopes(self) -> MutableSet[Any]:
        """Cut at the host's drain deadline (each entry's ``cancel``)."""

    def connection_task(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Start ``fn(*args)`` as a task of the host's in-flight work (raises RuntimeError
        once the host takes no more)."""

    def connection_failed(self, token: Any, exc: BaseException) -> None:
        """A bug in the connection's code: report it (never for peer behaviour)."""

    def connection_ended(self, token: Any) -> None:
        """The connection is closed: its accounting ends (``token``: what the host gave)."""


def start_taskless(
    stream: trio.SocketStream,
    ctx: H1Context,
    client: str,
    host: ConnectionHost,
    token: Any,
    first: FirstBytes | None = None,
    read: bytes = b"",
) -> None:
    """Serve ``stream`` as a resident coroutine with no task (see the module's docstring).
    ``first``: the listener also takes another protocol, told apart by the first bytes;
    ``read``: those the acceptor read already (HTTP/1.1 is served from them at once; until
    they decide, the rest is awaited on the dispatcher, and a client that sends nothing is
    closed without a word at the header timeout, as an idle keep-alive)."""
    conn = ClientConnection(stream, ctx, client)
    readiness = conn.reader.readiness
    assert readiness is not None  # a plain TCP stream is always watched
    if first is not None and read and first.classify(read) == HTTP1:
        first = None
    if first is None and read:
        conn.reader.take_first_bytes(read)
    TasklessConnection(conn, readiness, host, token, first, read)


class TasklessConnection:
    __slots__ = (
        "adopted",
        "conn",
        "cut",
        "driven",
        "first",
        "first_kind",
        "first_read",
        "host",
        "readiness",
        "scope",
        "stream",
        "token",
    )

    def __init__(
        self,
        conn: ClientConnection,
        readiness: Readiness,
        host: ConnectionHost,
        token: Any,
        first: FirstBytes | None = None,
        first_read: bytes = b"",
    ) -> None:
        self.conn = conn
        stream = conn.stream
        assert isinstance(stream, trio.SocketStream)  # plain TCP: watched by the dispatcher
        self.stream = stream
        self.readiness = readiness
        self.host = host
        self.token = token
        self.adopted = False  # a task was started for it
        self.cut = False  # the host cut it (its task's whole run is cancelled)
        self.scope: trio.CancelScope | None = None  # that task's, once it runs
        # While its first bytes are awaited: the listener's protocols, the bytes read so
        # far, and what they said.
        self.first = first
        self.first_read = first_read
        self.first_kind = NOT_YET
        coro = conn.serve() if first is None else self._first_bytes(first)
        self.driven = Driven(coro, None, self)
        conn.deadline.on_lapse = self.lapse
        host.live_scopes.add(self)
        readiness.park_soon(self.driven)  # its first step runs in the dispatcher's next batch

    def lapse(self) -> None:
        """Its deadline lapsed (the DeadlineWatch): cancel its life, as for a task's."""
        self.conn.life.cancel()
        self._claim()

    def cancel(self) -> None:
        """The host's cut (drain deadline): cancel all of it, the end's waits included."""
        self.cut = True
        self.conn.life.cancel()
        if self.scope is not None:
            self.scope.cancel()
        self._claim()

    def _claim(self) -> None:
        """Cancelled: a task takes the coroutine from the dispatcher, to deliver it."""
        if self.adopted:
            return  # its task has it (or will): the cancelled scope reaches it there
        if self.readiness.detach(self.driven):
            self._adopt(DETACHED)
        # else the dispatcher is running it right now: its step ends as DETACHED, which
        # comes back through on_move.

    async def _first_bytes(self, first: FirstBytes) -> None:
        """Its coroutine until the first bytes say what they are (``first_kind``)."""
        conn = self.conn
        sock = self.stream.socket
        fd = conn.reader.fd
        deadline = conn.deadline
        deadline.set(conn.now() + conn.header_timeout_s, KEEPALIVE_IDLE)
        while True:
            if self.first_read:
                kind = first.classify(self.first_read)
                if kind != NOT_YET:
                    break
            more = first.read_first(sock)
            if more is None:
                if DRIVING.mode == RESIDENT:
                    await trap(2 * fd)
                else:
                    await self.readiness.wait_readable(fd)
            elif more:
                self.first_read += more
            else:
                kind = NOTHING
                break
        deadline.set(math.inf, UNWATCHED)
        self.first_kind = kind

    def _after_first_bytes(self) -> None:
        kind = self.first_kind
        if kind == HTTP1:
            self.first = None
            self.conn.reader.take_first_bytes(self.first_read)
            self.first_read = b""
            self.driven.coro = self.conn.serve()
            self.readiness.park_soon(self.driven)
        elif kind == OTHER:
            self._adopt(_SERVE_OTHER)
        else:
            self._close()

    def on_move(self, move: object) -> None:
        """The dispatcher's word while no task owns it: FINISHED (its held writes are out),
        or a move for a task (``Readiness._step``)."""
        if move is not FINISHED:
            self._adopt(move)
            return
        if self.first is not None:
            self._after_first_bytes()
            return
        try:
            self.conn.deadline.retire()  # no lapse from here on: it has ended
            quiet = quiet_end(self.conn)
        except Exception as exc:
            self.host.connection_failed(self.token, exc)
            quiet = True
        if quiet:
            self._close()
        else:
            self._adopt(FINISHED)

    def _adopt(self, move: object) -> None:
        self.adopted = True
        try:
            self.host.connection_task(self._owned, move)
        except RuntimeError:  # the host takes no more tasks (its run is ending): close now
            try:
                self.driven.coro.close()
            except RuntimeError:  # it awaited in a finally: nothing more to run of it
                pass
            self._close()

    async def _owned(self, move: object) -> None:
        conn = self.conn
        try:
            with trio.CancelScope() as scope:
                self.scope = scope
                if self.cut:
                    scope.cancel()
                if move is _SERVE_OTHER:
                    assert self.first is not None
                    with conn.life:
                        await self.first.serve_other(self.stream, conn.client, self.first_read)
                    return  # the other protocol's server ended it: only the close is left
                if move is not FINISHED:
                    try:
                        with conn.life:
                            await drive_from(self.readiness, self.driven, move)
                    finally:
                        conn.deadline.retire()
                await finish_connection(conn)
        except Exception as exc:  # a bug in one connection must never take the worker down
            self.host.connection_failed(self.token, exc)
        finally:
            self._close()

    def _close(self) -> None:
        try:
            deadline = self.conn.deadline
            deadline.retire()
            # The watch's heap keeps a retired deadline until its entry comes due: it must
            # not keep this connection (its reader, buffers, coroutine) alive that long.
            deadline.on_lapse = _no_lapse
            close_now(self.conn)
        finally:
            self.driven.keeper = None  # no cycle for the collector: freed as it ends
            self.host.live_scopes.discard(self)
            self.host.connection_ended(self.token)


def _no_lapse() -> None:
    return None
