"""Bounded per-backend pool of idle upstream HTTP/1.1 connections.

Owns: how many connections a backend may have open (``max_per_backend``), how many may idle
(``max_idle_per_backend``), the separate budget of tunnels (``max_tunnels_per_backend``:
WebSocket tunnels and streamed uploads hold a connection for as long as the client likes,
so they take their slots from a semaphore of their own and cannot starve ordinary requests,
issue 17 item 8; a streamed upload's connection rejoins the ordinary pool only when an
ordinary slot is free), idle expiry, and the desync guard's last line (a connection is
only ever returned by the caller after a complete, well-framed exchange; here we also refuse
one that has unread bytes or EOF waiting). Must never parse HTTP.
"""

from __future__ import annotations

import collections
import select
from dataclasses import dataclass, field
from typing import Final

import trio

from gateway.http.errors import NoBackend
from gateway.http.limits import PoolLimits
from workers.http1.backend import Backend, Connect, connect_with_timeout, open_backend_stream
from workers.http1.exchange_steps import clock_now
from workers.http1.message_reader import MessageReader
from workers.http1.socket_io import forget

# Bound once (compiled, each ``select.X`` is a module attribute lookup).
_poll: Final = select.poll
_POLL_READABLE: Final = select.POLLIN | select.POLLPRI


@dataclass(slots=True)
class UpstreamConn:
    backend: Backend
    stream: trio.abc.Stream
    reused: bool = False
    idle_since: float = 0.0
    tunnel: bool = False  # its slot is from the tunnel budget, not the ordinary one
    # The response parser, kept across exchanges while it sits exactly between messages
    # (saves building an llhttp parser per request); None: the next exchange builds one.
    reader: MessageReader | None = None


@dataclass(slots=True)
class _BackendSlots:
    limiter: trio.Semaphore
    tunnel_limiter: trio.Semaphore
    idle: collections.deque[UpstreamConn] = field(default_factory=collections.deque)
    open_count: int = 0


class PoolExhausted(NoBackend):
    kind = "pool_exhausted"


def _has_pending_input(conn: UpstreamConn) -> bool:
    """True when an idle connection has bytes or EOF waiting: it cannot be reused safely."""
    sock = getattr(conn.stream, "socket", None)
    if sock is None:
        return False
    try:
        fd = sock.fileno()
    except OSError:
        return True
    if fd < 0:
        return True  # closed under us
    reader = conn.reader
    readiness = reader.readiness if reader is not None else None
    if readiness is not None and not readiness.flagged(fd):
        # Watched, and no event since its reader last read: nothing arrived that the
        # dispatcher has seen (nginx watches its idle upstream connections the same way).
        return False
    # Readable without blocking means stray bytes (desync), EOF or an error: all unusable.
    # One poll(2) with a zero timeout; cheaper than wrapping the fd in a socket to MSG_PEEK.
    poller = _poll()
    poller.register(fd, _POLL_READABLE)
    if poller.poll(0):
        return True
    if readiness is not None:
        readiness.unflag(fd)  # a stale flag (its bytes were read with an earlier batch)
    return False


def _to_tunnel(slots: _BackendSlots) -> bool:
    """Move an idle connection's slot from the ordinary budget to the tunnel one, if free."""
    if slots.tunnel_limiter.value == 0:
        return False
    slots.tunnel_limiter.acquire_nowait()
    slots.limiter.release()
    return True


class UpstreamPool:
    def __init__(self, limits: PoolLimits, connect: Connect | None = None) -> None:
        self.limits = limits
        self._connect = connect or open_backend_stream
        self._slots: dict[str, _BackendSlots] = {}  # by Backend.key
        self._now = clock_now()

    def _slots_for(self, backend: Backend) -> _BackendSlots:
        slots = self._slots.get(backend.key)
        if slots is None:
            slots = self._slots[backend.key] = _BackendSlots(
                trio.Semaphore(self.limits.max_per_backend),
                trio.Semaphore(self.limits.max_tunnels_per_backend),
            )
        return slots

    def idle_count(self, backend: Backend) -> int:
        slots = self._slots.get(backend.key)
        return len(slots.idle) if slots else 0

    def open_count(self, backend: Backend) -> int:
        slots = self._slots.get(backend.key)
        return slots.open_count if slots else 0

    def take_idle(self, backend: Backend, tunnel: bool = False) -> UpstreamConn | None:
        """The newest idle connection when it is usable now, without awaiting; None: call
        ``acquire`` (which also closes expired or unusable idle connections). ``tunnel``: for
        a streamed upload, whose slot then moves to the tunnel budget (None when it is full)."""
        slots = self._slots.get(backend.key)
        if slots is None or not slots.idle:
            return None
        conn = slots.idle[-1]
        if self._now() - conn.idle_since >= self.limits.idle_timeout_s or (
            _has_pending_input(conn)
        ):
            return None
        if tunnel and not _to_tunnel(slots):
            return None
        slots.idle.pop()
        conn.reused = True
        conn.tunnel = tunnel
        return conn

    async def acquire(
        self, backend: Backend, *, fresh: bool = False, tunnel: bool = False
    ) -> UpstreamConn:
        """An idle connection (unless ``fresh``) or a new one; raises typed connect errors.
        ``tunnel``: a WebSocket tunnel or a streamed upload, its slot from the tunnel budget."""
        slots = self._slots_for(backend)
        now = self._now()
        while slots.idle and not fresh:
            conn = slots.idle.pop()
            if now - conn.idle_since < self.limits.idle_timeout_s and not _has_pending_input(conn):
                if not tunnel:
                    conn.reused = True
                    return conn
                if _to_tunnel(slots):
                    conn.reused = conn.tunnel = True
                    return conn
                slots.idle.append(conn)  # no tunnel slot now: wait for one below
                break
            await self._close(slots, conn)
        timeout_s = self.limits.connect_timeout_ms / 1000
        limiter = slots.tunnel_limiter if tunnel else slots.limiter
        if not tunnel and slots.limiter.value == 0 and slots.idle:
            await self._close(slots, slots.idle.popleft())
        with trio.move_on_after(timeout_s) as scope:
            await limiter.acquire()
        if scope.cancelled_caught:
            if tunnel:
                cap = self.limits.max_tunnels_per_backend
                raise PoolExhausted(f"{backend.id}: {cap} tunnels busy", kind="tunnels_exhausted")
            raise PoolExhausted(f"{backend.id}: {self.limits.max_per_backend} connections busy")
        try:
            stream = await connect_with_timeout(self._connect, backend, timeout_s)
        except BaseException:
            limiter.release()
            raise
        slots.open_count += 1
        return UpstreamConn(backend, stream, tunnel=tunnel)

    async def release(self, conn: UpstreamConn, *, reusable: bool) -> None:
        """Return after a clean exchange (``reusable``) or close."""
        if not self.keep(conn, reusable=reusable):
            await self.discard(conn)

    def keep(self, conn: UpstreamConn, *, reusable: bool) -> bool:
        """Pool ``conn`` if it is ``reusable`` and there is idle room; False: call ``discard``.

        Synchronous, so the common clean case needs no shielded await on the hot path.
        """
        if not reusable:
            return False
        slots = self._slots_for(conn.backend)
        if len(slots.idle) >= self.limits.max_idle_per_backend:
            return False
        if conn.tunnel:
            # A streamed upload's connection rejoins the pool on an ordinary slot, or closes.
            if slots.limiter.value == 0:
                return False
            slots.limiter.acquire_nowait()
            slots.tunnel_limiter.release()
            conn.tunnel = False
        if conn.reader is not None and not conn.reader.at_boundary:
            conn.reader = None
        conn.idle_since = self._now()
        slots.idle.append(conn)
        return True

    async def discard(self, conn: UpstreamConn) -> None:
        """Close a connection ``keep`` refused; its slot is freed before the close awaits."""
        await self._close(self._slots_for(conn.backend), conn)

    def discard_now(self, conn: UpstreamConn) -> bool:
        """``discard`` without awaiting, for a plain TCP stream (False: call ``discard``);
        what a resident connection (``workers/http1/dispatch.py``) uses."""
        stream = conn.stream
        if not isinstance(stream, trio.SocketStream):
            return False
        self._release_slot(self._slots_for(conn.backend), conn)
        forget(stream)
        stream.socket.close()
        return True

    def _release_slot(self, slots: _BackendSlots, conn: UpstreamConn) -> None:
        if conn.reader is not None:  # closing: its kept parser's cycle is broken now
            conn.reader.release()
            conn.reader = None
        slots.open_count -= 1
        if conn.tunnel:
            slots.tunnel_limiter.release()
        else:
            slots.limiter.release()

    async def _close(self, slots: _BackendSlots, conn: UpstreamConn) -> None:
        self._release_slot(slots, conn)
        forget(conn.stream)
        await trio.aclose_forcefully(conn.stream)

    async def aclose(self) -> None:
        for slots in self._slots.values():
            while slots.idle:
                await self._close(slots, slots.idle.pop())
